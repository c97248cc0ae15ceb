"""Protocol options of one secure-aggregation call (the same for every backend)."""

from __future__ import annotations

import dataclasses
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
      clip: C > 0; update values are clipped to ``[-C, C]`` (and counted) before quantising.
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
      mask_seed: FOR TESTS ONLY: draw the masks from a seeded, non-cryptographic stream.
    """

    clip: float = 1.0
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
    mask_seed: int | None = None

    def validated(self, backend: Backend) -> RingOptions:
        """Checks every option; resolves ``encrypt="default"``."""
        if self.on_dropout not in ("reform", "abort"):
            raise InvalidOptionError(f"on_dropout={self.on_dropout!r}: use 'reform' or 'abort'")
        if self.layout not in ("flat", "per_leaf"):
            raise InvalidOptionError(f"layout={self.layout!r}: use 'flat' or 'per_leaf'")
        if not isinstance(self.auto_max_values, int) or self.auto_max_values < 1:
            raise InvalidOptionError(f"auto_max_values={self.auto_max_values!r}: a positive int")
        if self.mask_seed is not None and not (
            isinstance(self.mask_seed, int) and self.mask_seed >= 0
        ):
            raise InvalidOptionError(f"mask_seed={self.mask_seed!r}: a non-negative int or None")
        encrypt = self.encrypt
        if isinstance(encrypt, str) and encrypt == "default":
            encrypt = "auto" if backend.name == "concrete" else None
        elif encrypt is not None and not isinstance(encrypt, str):
            encrypt = tuple(encrypt)
        return dataclasses.replace(self, encrypt=encrypt)
