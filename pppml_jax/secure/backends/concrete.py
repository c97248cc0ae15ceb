"""The ``concrete`` backend: Zama Concrete (TFHE) through concrete-python, one addition circuit.

One circuit ``f(acc, x) = acc + x`` on vectors of ``chunk_size`` encrypted integers of width
w is compiled once per (w, chunk size) and reused hop after hop (with a twin that takes
compressed inputs, for the first message). An LWE ciphertext of width w
accepts inputs below ``2**w`` and adds modulo ``2**(w+1)`` natively (the padding bit wraps),
which gives exact modular sums with no bootstrapping:

- values live modulo ``M = 2**(bits+1)``, scaled by ``2**m`` inside the ciphertext; the m
  low "slack" bits absorb the noise that builds up over many additions (the compiler only
  budgets for two fresh inputs), and decryption rounds them away (``m`` grows with
  ``max_parties``; decryption refuses a sum whose slack is more than half used);
- a contribution ``q`` (``|q| < 2**(bits-1)``) is encrypted as ``q + 2**(bits-1)`` so that
  it is a valid input; the initiator removes the offsets at the end;
- the initiator's masked value, uniform modulo M, is split into two inputs below ``2**w``.

The mask is uniform modulo M, which is the native message modulus: a hospital that decrypts
the running sum sees a uniform value (perfect hiding). With ``compress_inputs`` (default)
the initiator's two fresh encryptions are seeded (about 24 bytes per value instead of 8.7 kB)
and travel in that form as the first message; every other hop carries a full ciphertext
(about 8.7 kB per value at the default 16 bits). Other fresh inputs are never sent, so they
are made uncompressed (decompressing them would make each addition about 2.5x slower).
Security: concrete-python's optimizer picks parameters for 128-bit security (its default
``security_level``).
"""

from __future__ import annotations

import functools
import math
import struct
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from pppml_jax.secure.backends.base import Backend, BackendInfo
from pppml_jax.secure.errors import (
    BackendUnavailableError,
    DecryptionError,
    InvalidOptionError,
    MalformedCiphertextError,
)
from pppml_jax.secure.messages import pack_chunks, unpack_chunks


@dataclass(frozen=True)
class ConcreteConfig:
    """Options of the ``concrete`` backend.

    Attributes:
      bits: sums are modulo ``2**(bits+1)``; one contribution stays below ``2**(bits-1)``
        in absolute value (8 to 24; default 16).
      chunk_size: values per compiled circuit call (default 512).
      max_parties: most clients one sum may have; sets the slack bits (default 32).
      compress_inputs: send the initiator's fresh ciphertexts seeded (compressed).
    """

    bits: int = 16
    chunk_size: int = 512
    max_parties: int = 32
    compress_inputs: bool = True


def _import_fhe() -> Any:
    """Imports ``concrete.fhe`` on first use (it takes seconds and gigabytes)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from concrete import fhe
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise BackendUnavailableError(
            "the concrete backend needs concrete-python: pip install concrete-python "
            "(or pppml-jax[fhe])"
        ) from err
    return fhe


@functools.lru_cache(maxsize=8)
def _compiled_adder(width: int, chunk: int, compress: bool) -> Any:
    """Compiles ``acc + x`` on ``[chunk]`` encrypted integers of ``width`` bits (cached)."""
    fhe = _import_fhe()
    config = fhe.Configuration(compress_input_ciphertexts=compress, show_progress=False)
    compiler = fhe.Compiler(lambda acc, x: acc + x, {"acc": "encrypted", "x": "encrypted"})
    half = (1 << (width - 1)) - 1
    inputset = [
        (np.zeros(chunk, np.int64), np.zeros(chunk, np.int64)),
        (np.full(chunk, half, np.int64), np.full(chunk, half, np.int64)),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compiler.compile(inputset, config)


@dataclass
class ConcreteSecret:
    """The hospitals' material: concrete clients holding the secret keys, and the circuits.

    Attributes:
      client: encrypts and decrypts for ``circuit`` (uncompressed inputs, fast to add).
      evaluation_keys: evaluation keys (none are needed by additions, but the runtime asks).
      circuit: the compiled adder with uncompressed inputs, used at every hop.
      compressed_client: the same keys, for ``compressed_circuit`` (``None`` if unused).
      compressed_circuit: the adder with seeded inputs; adds the initiator's pair.
    """

    client: Any
    evaluation_keys: Any
    circuit: Any
    compressed_client: Any = None
    compressed_circuit: Any = None


@dataclass
class ConcretePublic:
    """The relay's material: evaluation keys only (empty for an addition circuit)."""

    evaluation_keys: Any


@dataclass
class ConcreteFresh:
    """One party's fresh encryption: per chunk one input, or an input pair (``paired``)."""

    chunks: list[Any]
    paired: bool
    compressed: bool = False


@dataclass
class ConcreteSum:
    """A running sum: per chunk one ciphertext, or a pair still to be added.

    Attributes:
      chunks: ``[k]`` ciphertexts (``fhe.Value``), or ``[k]`` pairs when ``pending``.
      pending: the initiator's compressed pair, not yet added (first message only).
      offsets: how many offset contributions the sum holds.
    """

    chunks: list[Any]
    pending: bool
    offsets: int


class ConcreteBackend(Backend):
    """TFHE additions with concrete-python; exact modular sums, perfect hiding."""

    name = "concrete"
    exact = True

    def __init__(self, config: ConcreteConfig = ConcreteConfig()) -> None:
        if not (isinstance(config.bits, int) and 8 <= config.bits <= 24):
            raise InvalidOptionError(f"bits={config.bits!r}: concrete needs 8 to 24")
        if not (isinstance(config.chunk_size, int) and 1 <= config.chunk_size <= 65536):
            raise InvalidOptionError(f"chunk_size={config.chunk_size!r}: use 1 to 65536")
        if not (isinstance(config.max_parties, int) and 3 <= config.max_parties <= 1024):
            raise InvalidOptionError(f"max_parties={config.max_parties!r}: use 3 to 1024")
        self.config = config
        fresh = config.max_parties + 1
        self.slack = math.ceil(math.log2(math.sqrt(fresh / 2))) + 1
        self.width = config.bits + self.slack
        self.modulus = 1 << (config.bits + 1)
        self.offset = 1 << (config.bits - 1)
        self.slots = config.chunk_size
        self.max_abs_each = self.offset - 1
        self.max_abs_sum = (1 << config.bits) - 1
        self.max_parties = config.max_parties

    def keygen(self) -> tuple[ConcreteSecret, ConcretePublic]:
        """Fresh TFHE keys: the clients (secret) for hospitals, evaluation keys for the relay.

        Two circuits share one key set: seeded (compressed) inputs only pay off for the
        initiator's pair, which crosses the wire; every other fresh input is added by the
        party that made it, where decompression would only cost time.
        """
        fhe = _import_fhe()
        circuit = _compiled_adder(self.width, self.slots, False)
        client = fhe.Client(circuit.client.specs)
        client.keygen(force=True)
        ek = client.evaluation_keys
        secret = ConcreteSecret(client, ek, circuit)
        if self.config.compress_inputs:
            packed = _compiled_adder(self.width, self.slots, True)
            info = packed.client.specs.program_info.get_keyset_info()
            if info != circuit.client.specs.program_info.get_keyset_info():  # pragma: no cover
                raise InvalidOptionError("concrete chose different keys for compressed inputs")
            secret.compressed_client = fhe.Client(packed.client.specs)
            secret.compressed_client.keys = client.keys
            secret.compressed_circuit = packed
        return secret, ConcretePublic(ek)

    def _run(self, secret: ConcreteSecret, a: Any, b: Any, *, compressed: bool = False) -> Any:
        circuit = secret.compressed_circuit if compressed else secret.circuit
        try:
            return circuit.server.run(a, b, evaluation_keys=secret.evaluation_keys)
        except Exception as err:  # the runtime rejects ciphertexts of another circuit
            raise MalformedCiphertextError(
                f"concrete circuit rejected a ciphertext ({err})"
            ) from err

    def encrypt(self, secret: ConcreteSecret, values: np.ndarray, *, first: bool) -> ConcreteFresh:
        """Fresh encryptions: an input pair per chunk (``first``), else one offset input."""
        v = np.asarray(values, np.int64).reshape(-1, self.slots)
        top = (1 << self.width) - 1
        if first:
            scaled = np.mod(v, np.int64(self.modulus)) << self.slack
            a = np.minimum(scaled, top)
            client = secret.compressed_client or secret.client
            pairs = [tuple(client.encrypt(x, y)) for x, y in zip(a, scaled - a, strict=True)]
            return ConcreteFresh(pairs, paired=True, compressed=client is not secret.client)
        if np.any(np.abs(v) > self.max_abs_each):
            raise InvalidOptionError("concrete contribution exceeds max_abs_each (quantiser bug)")
        scaled = (v + self.offset) << self.slack
        return ConcreteFresh([secret.client.encrypt(None, x)[1] for x in scaled], paired=False)

    def _fold(self, secret: ConcreteSecret, running: ConcreteSum) -> list[Any]:
        """The running ciphertexts, with a pending pair added up first."""
        if running.pending:
            return [self._run(secret, a, b, compressed=True) for a, b in running.chunks]
        return running.chunks

    def add(self, secret: ConcreteSecret, running: ConcreteSum | None, contribution: ConcreteFresh):
        """Runs the compiled adder once per chunk (twice where a pair is pending)."""
        offsets = 0 if contribution.paired else 1
        packed = contribution.compressed
        if running is None:
            if contribution.paired and packed:
                return ConcreteSum(list(contribution.chunks), pending=True, offsets=0)
            if contribution.paired:
                chunks = [self._run(secret, a, b) for a, b in contribution.chunks]
                return ConcreteSum(chunks, pending=False, offsets=0)
            return ConcreteSum(list(contribution.chunks), pending=False, offsets=1)
        acc = self._fold(secret, running)
        new = contribution.chunks
        if contribution.paired:
            new = [self._run(secret, a, b, compressed=packed) for a, b in new]
        out = [self._run(secret, s, x) for s, x in zip(acc, new, strict=True)]
        return ConcreteSum(out, pending=False, offsets=running.offsets + offsets)

    def serialize(self, running: ConcreteSum) -> bytes:
        flat = []
        for c in running.chunks:
            flat.extend(c if running.pending else (c,))
        head = struct.pack("<BI", int(running.pending), running.offsets)
        return head + pack_chunks([x.serialize() for x in flat])

    def deserialize(self, secret: ConcreteSecret, data: bytes, *, where: str) -> ConcreteSum:
        fhe = _import_fhe()
        if len(data) < 5:
            raise MalformedCiphertextError(f"{where}: concrete payload of {len(data)} bytes")
        pending, offsets = struct.unpack_from("<BI", data, 0)
        values = []
        for i, raw in enumerate(unpack_chunks(data[5:], where=where)):
            try:
                values.append(fhe.Value.deserialize(raw))
            except Exception as err:  # concrete raises RuntimeError on bad buffers
                raise MalformedCiphertextError(
                    f"{where}: concrete ciphertext {i} does not deserialize ({err})"
                ) from err
        if pending not in (0, 1) or (pending and len(values) % 2):
            raise MalformedCiphertextError(f"{where}: inconsistent concrete sum header")
        chunks = list(zip(values[::2], values[1::2], strict=True)) if pending else values
        return ConcreteSum(chunks, bool(pending), offsets)

    def length(self, running: ConcreteSum) -> int:
        return len(running.chunks) * self.slots

    def decrypt(self, secret: ConcreteSecret, running: ConcreteSum) -> np.ndarray:
        """Decrypts, rounds the slack bits away and removes the offsets."""
        chunks = self._fold(secret, running)
        if not chunks:
            return np.zeros(0, np.int64)
        try:
            raw = np.concatenate([np.asarray(secret.client.decrypt(c), np.int64) for c in chunks])
        except Exception as err:
            raise MalformedCiphertextError(f"concrete decryption failed ({err})") from err
        native = np.int64(1 << (self.width + 1))
        raw = np.mod(raw, native)
        half = np.int64(1 << (self.slack - 1))
        low = np.mod(raw + half, np.int64(1 << self.slack)) - half
        if np.any(np.abs(low) > (1 << self.slack) // 4):
            raise DecryptionError(
                "concrete sum used more than half of its noise slack; raise max_parties"
            )
        values = np.mod((raw + half) >> self.slack, np.int64(self.modulus))
        return np.mod(values - running.offsets * self.offset, np.int64(self.modulus))

    def secret_key_bytes(self, secret: ConcreteSecret) -> bytes:
        return secret.client.keys.serialize()

    def public_holds_secret(self, public: ConcretePublic) -> bool:
        return not isinstance(public, ConcretePublic) or hasattr(public, "client")

    def info(self) -> BackendInfo:
        return BackendInfo(
            name=self.name,
            exact=True,
            modulus=self.modulus,
            slots=self.slots,
            parameters={
                "bits": self.config.bits,
                "circuit_width": self.width,
                "slack_bits": self.slack,
                "chunk_size": self.slots,
                "compress_inputs": self.config.compress_inputs,
            },
            security="128-bit (concrete-python optimizer default security_level=128)",
            hiding=f"perfect: the mask is uniform modulo 2**{self.config.bits + 1}, the native "
            "LWE message modulus",
        )
