"""Helpers shared by the TenSEAL backends: lazy import, security table, chunk I/O."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from pppml_jax.secure.errors import BackendUnavailableError

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
