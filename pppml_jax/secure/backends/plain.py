"""The ``plain`` backend: additive masking modulo ``2**bits``, no encryption.

Values cross the wire as little-endian unsigned integers (4 bytes when ``bits <= 32``, else 8).
Hospitals are kept blind by the initiator's uniform mask. Against the relay, which sees every
message, the ring adds relay pads derived from the hospitals' shared key (``relay_pads=True``,
the default); without them the relay reads each non-initiator's quantised update as the
difference of two consecutive messages. This backend also carries the masked-only part of a
selectively encrypted update.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pppml_jax.secure.backends.base import Backend, BackendInfo
from pppml_jax.secure.errors import InvalidOptionError, MalformedCiphertextError


@dataclass(frozen=True)
class PlainConfig:
    """Options of the ``plain`` backend.

    Attributes:
      bits: k, sums are modulo ``2**k`` (8 to 62; 32 by default: 4 bytes per value).
    """

    bits: int = 32


class PlainBackend(Backend):
    """Masking only: the "ciphertext" is the vector of residues modulo ``2**bits``."""

    name = "plain"
    exact = True

    def __init__(self, config: PlainConfig = PlainConfig()) -> None:
        if not (isinstance(config.bits, int) and 8 <= config.bits <= 62):
            raise InvalidOptionError(f"bits={config.bits!r}: plain needs an integer in [8, 62]")
        self.config = config
        self.modulus = 1 << config.bits
        self.slots = 1
        self.max_abs_sum = (1 << (config.bits - 1)) - 1
        self.max_abs_each = self.max_abs_sum
        self.max_parties = 1 << 20
        self._dtype = np.dtype("<u4") if config.bits <= 32 else np.dtype("<u8")

    def keygen(self) -> tuple[None, None]:
        """No encryption keys (the MAC and pad keys are the key set's, not the backend's)."""
        return None, None

    def encrypt(self, secret: None, values: np.ndarray, *, first: bool) -> np.ndarray:
        """Returns the residues of ``values`` modulo ``2**bits`` (int64)."""
        return np.mod(values, np.int64(self.modulus))

    def add(self, secret: None, running: np.ndarray | None, contribution: np.ndarray):
        """Adds residues modulo ``2**bits``."""
        if running is None:
            return contribution
        return np.mod(running + contribution, np.int64(self.modulus))

    def serialize(self, running: np.ndarray) -> bytes:
        """Little-endian unsigned integers, ``ceil(bits/32) * 4`` bytes each."""
        return running.astype(self._dtype).tobytes()

    def deserialize(self, secret: None, data: bytes, *, where: str) -> np.ndarray:
        """Parses residues; raises ``MalformedCiphertextError`` on a ragged length or range."""
        if len(data) % self._dtype.itemsize:
            raise MalformedCiphertextError(
                f"{where}: {len(data)} bytes is not a whole number of "
                f"{self._dtype.itemsize}-byte residues"
            )
        out = np.frombuffer(data, self._dtype).astype(np.int64)
        if out.size and int(out.max()) >= self.modulus:
            raise MalformedCiphertextError(
                f"{where}: residue out of range [0, 2**{self.config.bits})"
            )
        return out

    def length(self, running: np.ndarray) -> int:
        return int(running.size)

    def decrypt(self, secret: None, running: np.ndarray) -> np.ndarray:
        """Returns the residues themselves."""
        return np.asarray(running, np.int64)

    def secret_key_bytes(self, secret: None) -> bytes:
        return b""

    def public_holds_secret(self, public: None) -> bool:
        return False

    def info(self) -> BackendInfo:
        return BackendInfo(
            name=self.name,
            exact=True,
            modulus=self.modulus,
            slots=1,
            parameters={"bits": self.config.bits, "bytes_per_value": self._dtype.itemsize},
            security="no encryption; confidentiality against the relay rests on SHAKE-256 "
            "relay pads keyed by the hospitals' 256-bit shared key (relay_pads=True)",
            hiding=f"perfect: the mask is uniform modulo 2**{self.config.bits}",
        )
