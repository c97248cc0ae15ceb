"""Key material of a federation: who holds what, how it is generated and rotated.

As in the paper, every hospital holds the same secret material (:class:`HospitalKeys`): the
backend's secret key, a MAC key that authenticates every message, and a pad key for the relay
pads. The relay holds only :class:`RelayKeys`: the backend's public parameters and evaluation
keys. In a deployment the hospitals would agree on their material out of band (or run a
threshold key generation); here :func:`generate_keyset` makes both halves in one place and
hands each party only its half. Rotation means generating a new key set (see
``SecureAggregator.rotate_keys`` and its ``rotate_every`` option); messages sealed under an
old key set then fail authentication.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from pppml_jax.secure.backends.base import Backend


@dataclass(frozen=True)
class HospitalKeys:
    """Secret material shared by every hospital (never given to the relay).

    Attributes:
      key_id: 8-byte hex identifier of the key set (public).
      backend_secret: the encryption backend's secret material (``None`` for ``plain``).
      mac_key: 32 random bytes; HMAC-SHA256 key authenticating every envelope.
      pad_key: 32 random bytes; SHAKE-256 key of the relay pads.
    """

    key_id: str
    backend_secret: Any = field(repr=False)
    mac_key: bytes = field(repr=False)
    pad_key: bytes = field(repr=False)

    def secret_for(self, channel: str) -> Any:
        """The secret a channel's backend uses: ``backend_secret`` for ``"encrypted"``.

        ``None`` for ``"masked"``: the masked-only channel's ``plain`` backend has no keys.
        """
        return self.backend_secret if channel == "encrypted" else None


@dataclass(frozen=True)
class RelayKeys:
    """Everything the relay holds: public parameters and evaluation keys, no secret key.

    Attributes:
      key_id: identifier of the key set.
      backend_public: the backend's public material (a TenSEAL context without its secret
        key, concrete evaluation keys, or ``None``).
    """

    key_id: str
    backend_public: Any = field(repr=False)


@dataclass(frozen=True)
class KeySet:
    """One generation of keys.

    Attributes:
      hospital: the hospitals' shared secret material.
      relay: the relay's public material.
      backend: name of the backend the keys belong to.
      created_round: the round at which the key set was generated (for rotation).
    """

    hospital: HospitalKeys
    relay: RelayKeys
    backend: str
    created_round: int


def generate_keyset(backend: Backend, *, round_index: int = 0) -> KeySet:
    """Generates fresh keys and splits them between hospitals and relay.

    The masked-only channel's ``plain`` backend has no keys of its own (its values are
    authenticated with ``mac_key`` and hidden from the relay with ``pad_key``).

    Args:
      backend: the encryption backend.
      round_index: the round the keys are made for (recorded for rotation).

    Returns:
      A :class:`KeySet` (may take a while for FHE backends).
    """
    key_id = os.urandom(8).hex()
    secret, public = backend.keygen()
    hospital = HospitalKeys(
        key_id=key_id,
        backend_secret=secret,
        mac_key=os.urandom(32),
        pad_key=os.urandom(32),
    )
    return KeySet(hospital, RelayKeys(key_id, public), backend.name, round_index)
