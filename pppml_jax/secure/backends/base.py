"""The backend interface: how integers are encrypted, added along the ring and decrypted.

A backend works on int64 vectors whose length is a multiple of ``slots``. It adds them
modulo ``modulus`` (M): decrypting the sum of the contributions gives, in every coordinate,
a representative of ``sum mod M``. Key material is split in two, explicitly:

- the *secret* material (what ``keygen`` returns first) is held by every hospital: it
  encrypts, decrypts and deserializes;
- the *public* material (second) is all the relay holds: parameters and evaluation keys,
  never a secret key.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is, as stated to users (docs, benchmark tables, ``res.stats``).

    Attributes:
      name: registry name.
      exact: True when decryption returns the modular sum exactly (no approximation error).
      modulus: M, the modulus of the integer sums (the mask is uniform modulo M).
      slots: values per ciphertext.
      parameters: scheme parameters (degree, moduli, scale, bit widths...).
      security: the security level and where it comes from.
      hiding: how well the mask hides a running sum from a hospital that decrypts it.
    """

    name: str
    exact: bool
    modulus: int
    slots: int
    parameters: dict[str, Any] = field(default_factory=dict)
    security: str = ""
    hiding: str = ""


class Backend(abc.ABC):
    """Additively homomorphic encryption of int64 vectors (one small interface per scheme).

    Attributes (set by subclasses):
      modulus: M, sums are modulo M (``<= 2**62``).
      slots: values per ciphertext chunk; vector lengths are multiples of it.
      max_abs_each: largest ``|v|`` of a non-initial contribution.
      max_abs_sum: largest ``|sum|`` (centered) the backend recovers exactly; below M/2.
      max_parties: most contributions one running sum may receive (noise growth).
    """

    name: ClassVar[str]
    exact: ClassVar[bool]
    modulus: int
    slots: int
    max_abs_each: int
    max_abs_sum: int
    max_parties: int

    @abc.abstractmethod
    def keygen(self) -> tuple[Any, Any]:
        """Returns ``(secret, public)``: material for the hospitals, and for the relay."""

    @abc.abstractmethod
    def encrypt(self, secret: Any, values: np.ndarray, *, first: bool) -> Any:
        """Encrypts one contribution.

        Args:
          secret: the hospitals' secret material.
          values: ``[k * slots]`` int64. With ``first=True`` (the initiator's masked value)
            any residue, centered in ``(-M/2, M/2]``; otherwise ``|v| <= max_abs_each``.
          first: whether this starts a running sum.
        """

    @abc.abstractmethod
    def add(self, secret: Any, running: Any | None, contribution: Any) -> Any:
        """Adds an encrypted contribution to the running sum (``None`` starts one)."""

    @abc.abstractmethod
    def serialize(self, running: Any) -> bytes:
        """The running sum as bytes for the wire."""

    @abc.abstractmethod
    def deserialize(self, secret: Any, data: bytes, *, where: str) -> Any:
        """Inverse of :meth:`serialize`; raises ``MalformedCiphertextError`` naming ``where``."""

    @abc.abstractmethod
    def length(self, running: Any) -> int:
        """Number of values (slots used) in a running sum."""

    @abc.abstractmethod
    def decrypt(self, secret: Any, running: Any) -> np.ndarray:
        """Returns ``[k * slots]`` int64 representatives of the sum modulo M.

        Raises:
          DecryptionError: the result cannot be trusted (noise too large).
        """

    @abc.abstractmethod
    def secret_key_bytes(self, secret: Any) -> bytes:
        """A serialization of the secret key (to check that it never crosses the wire)."""

    @abc.abstractmethod
    def public_holds_secret(self, public: Any) -> bool:
        """Whether the relay's material contains a secret key (must be False)."""

    @abc.abstractmethod
    def info(self) -> BackendInfo:
        """Parameters, security level and hiding of this backend instance."""
