"""The initiator's mask and the relay pads: uniform integers modulo M from strong randomness.

The mask R is drawn uniformly from ``Z_M`` in every coordinate, where M is the channel's
modulus: ``2**bits`` for the plain and masked-only channels, the plaintext modulus t (a prime)
for BFV, ``2**mask_bits`` for CKKS and the native LWE message modulus ``2**(bits+1)`` for
Concrete. Sums are taken modulo the same M, so ``R + s mod M`` is uniform whatever s is (for
CKKS, which cannot reduce, the hiding is statistical; see ``backends/ckks.py``).

Randomness comes from :func:`os.urandom` (the operating system's cryptographic generator).
A deterministic byte source exists for tests only (:func:`seeded_source`, reachable only
through the private ``SecureAggregator._test_mask_source`` hook, never from options or a
config); it must never be used in a deployment. Values are drawn by rejection sampling on
``bit_length(M - 1)``-bit words, which is exactly uniform (no modulo bias) for any M.

Relay pads (:func:`relay_pad`) hide masked-only values from the relay: each hospital adds a
pad derived with SHAKE-256 from the hospitals' shared key, and the initiator subtracts their
sum, so consecutive messages no longer differ by a client's update. Every pad is bound to the
call's random session id, so two calls (even with the same round index) never share a pad.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Sequence

import numpy as np

ByteSource = Callable[[int], bytes]
"""``source(k) -> k`` random bytes."""


def system_source(k: int) -> bytes:
    """``k`` bytes from the operating system's cryptographic generator (:func:`os.urandom`)."""
    return os.urandom(k)


def seeded_source(seed: int) -> ByteSource:
    """A reproducible byte source, FOR TESTS ONLY (a PCG64 stream is not cryptographic)."""
    gen = np.random.Generator(np.random.PCG64(seed))
    return lambda k: gen.bytes(k)


def _word_bytes(bits: int) -> int:
    return 1 if bits <= 8 else 2 if bits <= 16 else 4 if bits <= 32 else 8


def uniform_mod(modulus: int, size: int, *, source: ByteSource = system_source) -> np.ndarray:
    """Draws ``size`` integers uniformly from ``[0, modulus)`` by rejection sampling.

    Args:
      modulus: M, ``2 <= M <= 2**62``.
      size: number of values.
      source: byte source; the default is the operating system's cryptographic generator.

    Returns:
      ``[size]`` int64 array, every value uniform on ``[0, M)`` and independent.
    """
    if not 2 <= modulus <= 2**62:
        raise ValueError(f"modulus={modulus}: must be in [2, 2**62]")
    bits = (modulus - 1).bit_length()
    width = _word_bytes(bits)
    dtype = {1: "<u1", 2: "<u2", 4: "<u4", 8: "<u8"}[width]
    keep = np.uint64((1 << bits) - 1)
    out = np.empty(size, np.int64)
    filled = 0
    while filled < size:
        need = size - filled
        # Acceptance probability is above 1/2; draw with a margin to finish in ~one pass.
        draw = need + need // 2 + 16
        words = np.frombuffer(source(draw * width), dtype=dtype).astype(np.uint64) & keep
        good = words[words < np.uint64(modulus)][:need]
        out[filled : filled + good.size] = good.astype(np.int64)
        filled += good.size
    return out


def relay_pad(
    key: bytes,
    *,
    modulus: int,
    size: int,
    session: bytes,
    round_index: int,
    attempt: int,
    position: int,
) -> np.ndarray:
    """The pad a hospital adds to its masked-only values at one ring position.

    A keyed SHAKE-256 stream: pseudo-random to anyone without ``key`` (the relay), computable
    by every hospital (so the initiator can remove the sum of all pads).

    Args:
      key: the hospitals' shared pad key (32 bytes).
      modulus: M, a power of two (masked-only channels are modulo ``2**bits``).
      size: number of values.
      session: the call's 16-byte random session id.
      round_index, attempt, position: where in the protocol the pad is used (domain
        separation: with the session id, a pad is never reused).

    Returns:
      ``[size]`` int64 values in ``[0, M)``.
    """
    if modulus & (modulus - 1):
        raise ValueError(f"relay pads need a power-of-two modulus, got {modulus}")
    bits = modulus.bit_length() - 1
    width = 4 if bits <= 32 else 8
    label = b"pppml-relay-pad" + session + struct.pack("<qqq", round_index, attempt, position)
    stream = hashlib.shake_256(key + label).digest(size * width)
    words = np.frombuffer(stream, dtype="<u4" if width == 4 else "<u8").astype(np.uint64)
    return (words & np.uint64(modulus - 1)).astype(np.int64)


def pad_sum(
    key: bytes,
    *,
    modulus: int,
    size: int,
    session: bytes,
    round_index: int,
    attempt: int,
    positions: Sequence[int],
) -> np.ndarray:
    """The sum modulo M of the relay pads of the given ring positions.

    What a hospital subtracts to remove every pad added up to a message (the initiator, at the
    end of the ring, removes the pads of every position that contributed); other arguments as
    in :func:`relay_pad`.

    Returns:
      ``[size]`` int64 values in ``[0, M)``.
    """
    total = np.zeros(size, np.int64)
    for position in positions:
        pad = relay_pad(
            key,
            modulus=modulus,
            size=size,
            session=session,
            round_index=round_index,
            attempt=attempt,
            position=position,
        )
        total = np.mod(total + pad, np.int64(modulus))
    return total
