"""Protocol options of one secure-aggregation call (the same for every backend)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pppml_jax.secure.backends import Backend
from pppml_jax.secure.errors import InvalidOptionError
from pppml_jax.secure.faults import Fault


@dataclass(frozen=True)
class RingOptions:
    """Protocol options of one call (the same for every backend).

    Attributes:
      clip: ``"auto"`` (default): per round and leaf, every hospital announces the power of two
        above its largest magnitude (one byte per leaf, public) and the leaf's fixed-point
        range is the largest announced; nothing is ever clipped. Or C > 0: values are
        clipped to ``[-C, C]`` before quantising, with a :class:`ClippingWarning` when
        anything is, and the clipping included in ``error_bound``.
      stochastic_rounding: round stochastically (unbiased; error bound doubles) instead of
        to the nearest integer; seeded by ``seed`` when given.
      initiator: ``"round_robin"`` (``round_index % n``) or ``"seeded"`` (hash of the seed).
      allow_two_party: accept a ring of two, with a :class:`TwoPartyRingWarning`.
      on_dropout: ``"reform"`` (re-form the ring without the client) or ``"abort"``.
      encrypt: which leaves the backend encrypts: ``None`` (all), ``"auto"`` (all up to
        ``auto_max_values`` values, else the first and last layers), or name patterns
        (``fnmatch``, against key paths like ``params/Conv_0/kernel``). The other leaves
        travel masked only. ``"default"`` means ``"auto"`` for ``concrete``, else ``None``.
      auto_max_values: threshold of ``encrypt="auto"``.
      layout: ``"flat"`` (leaves back to back in ciphertexts) or ``"per_leaf"`` (each leaf
        starts a new ciphertext, as the published code did).
      relay_pads: add key-derived pads to masked-only values so the relay cannot read
        updates as differences of consecutive messages.
      masked_bits: masked-only values are summed modulo ``2**masked_bits``.
      faults: simulated :class:`Dropout` / :class:`Tamper` / :class:`Inject` faults.
      pairwise: add SecAgg-style pairwise masks (X25519, AES-CTR, Shamir shares for dropouts)
        inside the ring, so the relay plus fewer than ``threshold`` hospitals learn nothing
        about one update. ``None`` (default): on wherever the channel's backend sums modulo M
        exactly (``plain``, ``bfv`` and every masked-only channel); ``ckks`` and
        ``concrete`` ciphertexts cannot carry them.
      threshold: t of the Shamir shares (``None``: ``n // 2 + 1``, at least 2).
    """

    clip: float | str = "auto"
    stochastic_rounding: bool = False
    initiator: str = "round_robin"
    allow_two_party: bool = False
    on_dropout: str = "reform"
    encrypt: Any = "default"
    auto_max_values: int = 16384
    layout: str = "flat"
    relay_pads: bool = True
    masked_bits: int = 32
    faults: Sequence[Fault] = ()
    pairwise: bool | None = None
    threshold: int | None = None

    def validated(self, backend: Backend) -> RingOptions:
        """Checks every option; resolves ``encrypt="default"``."""
        if self.on_dropout not in ("reform", "abort"):
            raise InvalidOptionError(f"on_dropout={self.on_dropout!r}: use 'reform' or 'abort'")
        if self.layout not in ("flat", "per_leaf"):
            raise InvalidOptionError(f"layout={self.layout!r}: use 'flat' or 'per_leaf'")
        if not isinstance(self.auto_max_values, int) or self.auto_max_values < 1:
            raise InvalidOptionError(f"auto_max_values={self.auto_max_values!r}: a positive int")
        if isinstance(self.clip, str):
            if self.clip != "auto":
                raise InvalidOptionError(f"clip={self.clip!r}: 'auto' or a positive float")
        elif not (
            isinstance(self.clip, (int, float))
            and not isinstance(self.clip, bool)
            and math.isfinite(self.clip)
            and self.clip > 0
        ):
            raise InvalidOptionError(
                f"clip={self.clip!r}: pass 'auto' (no clipping) or a positive finite float"
            )
        if self.pairwise not in (None, True, False):
            raise InvalidOptionError(f"pairwise={self.pairwise!r}: True, False or None")
        if self.threshold is not None and not (
            isinstance(self.threshold, int) and self.threshold >= 2
        ):
            raise InvalidOptionError(f"threshold={self.threshold!r}: an int >= 2 or None")
        encrypt = self.encrypt
        if isinstance(encrypt, str) and encrypt == "default":
            encrypt = "auto" if backend.name == "concrete" else None
        elif encrypt is not None and not isinstance(encrypt, str):
            encrypt = tuple(encrypt)
        return dataclasses.replace(self, encrypt=encrypt)
