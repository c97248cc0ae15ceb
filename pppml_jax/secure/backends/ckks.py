"""The ``ckks`` backend: TenSEAL CKKS carrying integers, rounded back after decryption.

CKKS adds approximate real numbers. Here it carries the quantised integers and the mask, and
the initiator rounds the decrypted sum to the nearest integer: as long as the CKKS error stays
below 1/2 the result is exact, and decryption refuses any value farther than 1/4 from an
integer (``DecryptionError``). Measured errors: about 7e-3 for both presets at the default
44-bit mask, driven by double-precision encoding of values near 2**43.

CKKS cannot reduce modulo anything, so the running sum a hospital decrypts is ``R + s`` over
the integers, with R uniform on ``[-2**(k-1), 2**(k-1))`` (k = ``mask_bits``) and
``|s| < 2**(bits-1)``: the hiding is statistical, with distinguishing advantage at most
``2**(bits - mask_bits)`` per coordinate (``2**-24`` with the defaults). Use ``bfv`` where
perfect hiding matters.

Presets:
- ``paper``: the published configuration, N=8192, coefficient moduli
  [31, 26, 26, 26, 26, 26, 26, 31], scale 2**26, public-key encryption (about 116 bytes/value);
- ``lean`` (default): additions only, N=8192, [60, 40, 60], scale 2**40, secret-key encryption
  (about 57 bytes/value).
Both are at 128-bit security (218 and 160 of the 218 bits N=8192 allows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pppml_jax.secure.backends import _seal
from pppml_jax.secure.backends.base import Backend, BackendInfo
from pppml_jax.secure.errors import DecryptionError, InvalidOptionError

PRESETS = {
    # name: (degree, coefficient moduli, log2 scale, public-key encryption)
    "paper": (8192, [31, 26, 26, 26, 26, 26, 26, 31], 26, True),
    "lean": (8192, [60, 40, 60], 40, False),
}


@dataclass(frozen=True)
class CKKSConfig:
    """Options of the ``ckks`` backend.

    Attributes:
      preset: ``"lean"`` (default) or ``"paper"`` (see the module doc).
      bits: width of the quantised sums, ``|sum| < 2**(bits-1)`` (12 to 30; default 20).
      mask_bits: k, the mask is uniform on ``[-2**(k-1), 2**(k-1))`` (bits+8 to 46;
        default 44).
    """

    preset: str = "lean"
    bits: int = 20
    mask_bits: int = 44


class CKKSBackend(_seal.SealVectors, Backend):
    """TenSEAL CKKS vectors of N/2 slots holding integers; exact after rounding (checked)."""

    name = "ckks"
    scheme = "CKKS"
    exact = False

    def __init__(self, config: CKKSConfig = CKKSConfig()) -> None:
        if config.preset not in PRESETS:
            raise InvalidOptionError(
                f"preset={config.preset!r}: ckks presets are {sorted(PRESETS)}"
            )
        if not (isinstance(config.bits, int) and 12 <= config.bits <= 30):
            raise InvalidOptionError(f"bits={config.bits!r}: ckks needs 12 to 30")
        if not (isinstance(config.mask_bits, int) and config.bits + 8 <= config.mask_bits <= 46):
            raise InvalidOptionError(
                f"mask_bits={config.mask_bits!r}: ckks needs bits+8 to 46 (double precision "
                "limits exact recovery above 2**46)"
            )
        self.config = config
        self.degree, self.coeff_bits, self.log_scale, self.public_key = PRESETS[config.preset]
        self.modulus = 1 << config.mask_bits
        self.slots = self.degree // 2
        self.max_abs_sum = (1 << (config.bits - 1)) - 1
        self.max_abs_each = self.max_abs_sum
        self.max_parties = 1024

    def keygen(self) -> tuple[Any, Any]:
        """A fresh CKKS context with the secret key (hospitals) and a copy without (relay)."""
        ts = _seal.import_tenseal()
        enc = ts.ENCRYPTION_TYPE.ASYMMETRIC if self.public_key else ts.ENCRYPTION_TYPE.SYMMETRIC
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=self.degree,
            coeff_mod_bit_sizes=self.coeff_bits,
            encryption_type=enc,
            n_threads=1,
        )
        ctx.global_scale = float(2**self.log_scale)
        return ctx, _seal.public_copy(ctx)

    def encrypt(self, secret: Any, values: np.ndarray, *, first: bool) -> list[Any]:
        """One fresh CKKS ciphertext per ``slots`` values (integers as reals)."""
        ts = _seal.import_tenseal()
        rows = np.asarray(values, np.float64).reshape(-1, self.slots).tolist()
        return [ts.ckks_vector(secret, row) for row in rows]

    def _load_vector(self, secret: Any, chunk: bytes) -> Any:
        ts = _seal.import_tenseal()
        return ts.ckks_vector_from(secret, chunk)

    def decrypt(self, secret: Any, running: list[Any]) -> np.ndarray:
        """Decrypts and rounds; refuses if any value is more than 1/4 from an integer."""
        if not running:
            return np.zeros(0, np.int64)
        real = np.asarray([c.decrypt() for c in running], np.float64).reshape(-1)
        rounded = np.rint(real)
        worst = float(np.max(np.abs(real - rounded)))
        if worst > 0.25:
            raise DecryptionError(
                f"CKKS error {worst:.3f} is too close to 1/2 to round exactly; lower mask_bits "
                "or use the lean preset"
            )
        return rounded.astype(np.int64)

    def secret_key_bytes(self, secret: Any) -> bytes:
        return _seal.secret_key_blob(secret)

    def public_holds_secret(self, public: Any) -> bool:
        return bool(public.has_secret_key())

    def info(self) -> BackendInfo:
        return BackendInfo(
            name=self.name,
            exact=False,
            modulus=self.modulus,
            slots=self.slots,
            parameters={
                "preset": self.config.preset,
                "poly_modulus_degree": self.degree,
                "coeff_mod_bit_sizes": self.coeff_bits,
                "scale": f"2**{self.log_scale}",
                "encryption": "public key" if self.public_key else "symmetric (secret key)",
                "bits": self.config.bits,
                "mask_bits": self.config.mask_bits,
            },
            security=_seal.security_statement(self.degree, self.coeff_bits),
            hiding=(
                "statistical: advantage <= 2**"
                f"{self.config.bits - self.config.mask_bits} per coordinate (no modular "
                "reduction in CKKS)"
            ),
        )
