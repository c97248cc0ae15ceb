"""Helpers shared by the TenSEAL backends: lazy import, security table, chunk I/O."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from pppml_jax.secure.errors import BackendUnavailableError, MalformedCiphertextError
from pppml_jax.secure.messages import pack_chunks, unpack_chunks

# Largest total coefficient-modulus bit count for 128-bit classical security with a ternary
# secret (HomomorphicEncryption.org standard, the table SEAL enforces by default).
HE_STANDARD_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


def import_tenseal() -> Any:
    """Imports :mod:`tenseal` on first use (never at package import)."""
    try:
        import tenseal
        import tenseal.sealapi
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise BackendUnavailableError(
            "this backend needs TenSEAL: pip install tenseal==0.3.18 (or pppml-jax[fhe])"
        ) from err
    return tenseal


def security_statement(degree: int, coeff_bits: list[int]) -> str:
    """States the security level of a SEAL parameter set (see ``HE_STANDARD_128``)."""
    total = sum(coeff_bits)
    limit = HE_STANDARD_128[degree]
    return (
        f"128-bit classical (HE standard: N={degree} allows up to {limit} coefficient-modulus "
        f"bits, these use {total}; SEAL refuses weaker parameters)"
    )


def secret_key_blob(context: Any) -> bytes:
    """The SEAL serialization of a TenSEAL context's secret key."""
    fd, path = tempfile.mkstemp(suffix=".sk")
    os.close(fd)
    try:
        context.secret_key().data.save(path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def public_copy(context: Any) -> Any:
    """A copy of a TenSEAL context without its secret key (what the relay holds)."""
    ts = import_tenseal()
    return ts.context_from(context.serialize(save_secret_key=False))


class SealVectors:
    """Ring operations shared by the TenSEAL backends: chunked vectors of ``slots`` values.

    A backend sets ``scheme`` (its name in messages) and ``slots``, and loads one serialized
    chunk in ``_load_vector``.
    """

    scheme: str
    slots: int

    def add(self, secret: Any, running: list[Any] | None, contribution: list[Any]):
        """Ciphertext-ciphertext additions, chunk by chunk (in place on ``running``)."""
        if running is None:
            return contribution
        for acc, c in zip(running, contribution, strict=True):
            acc.add_(c)
        return running

    def serialize(self, running: list[Any]) -> bytes:
        return pack_chunks([c.serialize() for c in running])

    def deserialize(self, secret: Any, data: bytes, *, where: str) -> list[Any]:
        out = []
        for i, chunk in enumerate(unpack_chunks(data, where=where)):
            try:
                vec = self._load_vector(secret, chunk)
            except Exception as err:  # SEAL raises ValueError/RuntimeError on bad streams
                raise MalformedCiphertextError(
                    f"{where}: {self.scheme} ciphertext chunk {i} does not deserialize ({err})"
                ) from err
            if vec.size() != self.slots:
                raise MalformedCiphertextError(
                    f"{where}: {self.scheme} chunk {i} holds {vec.size()} values, "
                    f"expected {self.slots}"
                )
            out.append(vec)
        return out

    def length(self, running: list[Any]) -> int:
        return len(running) * self.slots

    def _load_vector(self, secret: Any, chunk: bytes) -> Any:
        raise NotImplementedError
