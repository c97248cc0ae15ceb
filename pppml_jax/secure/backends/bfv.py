"""The ``bfv`` backend: exact packed integers with TenSEAL BFV, one value per batching slot.

The plaintext modulus t is a prime with ``t = 1 mod 2N`` (so N values pack into one
ciphertext); sums are modulo t and the mask is uniform modulo t, which hides perfectly.
Only additions are needed, so the ciphertext modulus is as small as the noise allows: two
primes, the first (the data level that ciphertexts live at) ``bits + 12 + log2(max_parties)``
bits wide, the second the special prime that SEAL keeps for key switching. With the default
``compact`` preset (N=4096, t of 28 bits, primes of 46 and 47 bits) a ciphertext is
``2 * 4096 * 46`` bits, about 13.6 bytes per value once SEAL's zstd compression has run, with
128-bit security (93 of the 109 bits N=4096 allows). Decryption checks SEAL's invariant noise
budget and refuses a sum whose budget is spent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pppml_jax.secure.backends import _seal
from pppml_jax.secure.backends.base import Backend, BackendInfo
from pppml_jax.secure.errors import DecryptionError, InvalidOptionError

PRESETS = {
    # name: (poly_modulus_degree, plaintext modulus bits)
    "compact": (4096, 28),
    "wide": (8192, 40),
}


@dataclass(frozen=True)
class BFVConfig:
    """Options of the ``bfv`` backend.

    Attributes:
      preset: ``"compact"`` (N=4096, 28-bit t; default) or ``"wide"`` (N=8192, 40-bit t).
      bits: override of the plaintext-modulus bit size (16 to 40).
      poly_modulus_degree: override of N (4096 or 8192).
      max_parties: most clients one sum may have; sets the noise margin (default 64).
    """

    preset: str = "compact"
    bits: int | None = None
    poly_modulus_degree: int | None = None
    max_parties: int = 64


@dataclass
class BFVSecret:
    """The hospitals' material: a TenSEAL context with the secret key, and a noise meter."""

    context: Any
    decryptor: Any


class BFVBackend(_seal.SealVectors, Backend):
    """TenSEAL BFV with batching; symmetric (secret-key) encryption, exact modular sums."""

    name = "bfv"
    scheme = "BFV"
    exact = True

    def __init__(self, config: BFVConfig = BFVConfig()) -> None:
        if config.preset not in PRESETS:
            raise InvalidOptionError(f"preset={config.preset!r}: bfv presets are {sorted(PRESETS)}")
        degree, bits = PRESETS[config.preset]
        degree = config.poly_modulus_degree or degree
        bits = config.bits or bits
        if degree not in (4096, 8192):
            raise InvalidOptionError(f"poly_modulus_degree={degree}: bfv supports 4096 or 8192")
        if not (isinstance(bits, int) and 16 <= bits <= 40):
            raise InvalidOptionError(f"bits={bits!r}: bfv plaintext modulus needs 16 to 40 bits")
        if not (isinstance(config.max_parties, int) and 3 <= config.max_parties <= 4096):
            raise InvalidOptionError(f"max_parties={config.max_parties!r}: use 3 to 4096")
        data_bits = bits + 12 + math.ceil(math.log2(config.max_parties))
        coeff = [data_bits, data_bits + 1]
        if data_bits > 59 or sum(coeff) > _seal.HE_STANDARD_128[degree]:
            raise InvalidOptionError(
                f"bits={bits} with max_parties={config.max_parties} needs coefficient moduli "
                f"{coeff}, beyond 128-bit security at N={degree}; lower bits or raise N"
            )
        self.config = config
        self.degree = degree
        self.bits = bits
        self.coeff_bits = coeff
        ts = _seal.import_tenseal()
        self.modulus = int(ts.sealapi.PlainModulus.Batching(degree, bits).value())
        self.slots = degree
        self.max_abs_sum = (self.modulus - 1) // 2
        self.max_abs_each = self.max_abs_sum
        self.max_parties = config.max_parties

    def keygen(self) -> tuple[BFVSecret, Any]:
        """A fresh secret key (hospitals) and the public parameters (relay)."""
        ts = _seal.import_tenseal()
        ctx = ts.context(
            ts.SCHEME_TYPE.BFV,
            poly_modulus_degree=self.degree,
            plain_modulus=self.modulus,
            coeff_mod_bit_sizes=self.coeff_bits,
            encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
            n_threads=1,
        )
        decryptor = ts.sealapi.Decryptor(ctx.seal_context().data, ctx.secret_key().data)
        return BFVSecret(ctx, decryptor), _seal.public_copy(ctx)

    def encrypt(self, secret: BFVSecret, values: np.ndarray, *, first: bool) -> list[Any]:
        """One fresh BFV ciphertext per ``slots`` values."""
        ts = _seal.import_tenseal()
        rows = np.asarray(values, np.int64).reshape(-1, self.slots).tolist()
        return [ts.bfv_vector(secret.context, row) for row in rows]

    def _load_vector(self, secret: Any, chunk: bytes) -> Any:
        ts = _seal.import_tenseal()
        return ts.bfv_vector_from(secret.context, chunk)

    def decrypt(self, secret: BFVSecret, running: list[Any]) -> np.ndarray:
        """Decrypts every chunk; refuses if the first chunk's noise budget is spent.

        All chunks of a sum went through the same operations, so their noise is alike; the
        budget is measured on the first (measuring every chunk would double the cost).
        """
        if not running:
            return np.zeros(0, np.int64)
        budget = secret.decryptor.invariant_noise_budget(running[0].ciphertext()[0])
        if budget <= 0:
            raise DecryptionError(
                "BFV noise budget exhausted: the sum cannot be decrypted correctly; "
                "lower bits or raise max_parties"
            )
        return np.asarray([c.decrypt() for c in running], np.int64).reshape(-1)

    def secret_key_bytes(self, secret: BFVSecret) -> bytes:
        return _seal.secret_key_blob(secret.context)

    def public_holds_secret(self, public: Any) -> bool:
        return bool(public.has_secret_key())

    def info(self) -> BackendInfo:
        return BackendInfo(
            name=self.name,
            exact=True,
            modulus=self.modulus,
            slots=self.slots,
            parameters={
                "preset": self.config.preset,
                "poly_modulus_degree": self.degree,
                "plain_modulus": self.modulus,
                "plain_modulus_bits": self.bits,
                "coeff_mod_bit_sizes": self.coeff_bits,
                "encryption": "symmetric (secret key)",
            },
            security=_seal.security_statement(self.degree, self.coeff_bits),
            hiding=f"perfect: the mask is uniform modulo the plaintext prime t={self.modulus}",
        )
