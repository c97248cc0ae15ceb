"""Reading a transcript as a given party would: the public API for attack and threat-model code.

Every function here uses only what the named party legitimately holds:

- the relay: the bytes of every message (:func:`relay_sections`) and the published result
  (:func:`read_result`, the aggregate is authenticated, not encrypted);
- a hospital: the ring's shared keys (``aggregator.keys.hospital``), so it can decrypt any
  running sum it gets hold of (:func:`read_partial`), and its own pair seeds
  (:func:`known_pair_masks`, which needs ``SecureAggregator(record_pair_secrets=True)`` to
  simulate colluding hospitals).

Example (the relay plus the hospital after the victim, pairwise masks off)::

    agg = pj.secure.SecureAggregator("bfv")
    res = agg.aggregate(updates, w, round_index=n - 1, pairwise=False, clip=1.0)  # victim 0
    before = transcript.read_partial(agg, transcript.message_from(res, sender=n - 1))
    after = transcript.read_partial(agg, transcript.message_from(res, sender=0))
    q0 = transcript.difference(after, before, "encrypted")  # = the victim's integers
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from pppml_jax.secure.errors import InvalidOptionError
from pppml_jax.secure.masking import pad_sum
from pppml_jax.secure.messages import HEADER_BYTES, TAG_BYTES, Message, open_sealed, unpack_sections
from pppml_jax.secure.pairwise import signed_mask_sum
from pppml_jax.secure.quantize import centered
from pppml_jax.secure.results import AggregationResult


@dataclass(frozen=True)
class PartialReading:
    """A running sum as a hospital reads it after decryption.

    Attributes:
      sender, receiver, hop, attempt, round_index: from the authenticated header.
      session: the session id (bytes).
      values: channel name -> ``[length]`` int64 residues modulo M, relay pads of positions
        ``0..hop`` removed (what is left: ``R + sum q_k + pair masks``).
      moduli: channel name -> M.
    """

    sender: Any
    receiver: Any
    hop: int
    attempt: int
    round_index: int
    session: bytes
    values: dict[str, np.ndarray]
    moduli: dict[str, int]


def message_from(result: AggregationResult, *, sender: int, kind: str = "partial") -> Message:
    """The message of ``kind`` that ``sender`` sent in the successful attempt."""
    attempt = result.stats.attempts - 1
    for m in result.transcript:
        if m.kind == kind and m.sender == sender and m.attempt == attempt:
            return m
    raise ValueError(f"no {kind} message from {sender!r} in attempt {attempt}")


def relay_sections(message: Message) -> dict[str, bytes]:
    """What the relay reads of a message: its named sections (ciphertexts, residues) as bytes."""
    body = message.payload[HEADER_BYTES:-TAG_BYTES]
    return {k: bytes(v) for k, v in unpack_sections(body, where="relay view").items()}


def read_partial(aggregator: Any, message: Message) -> PartialReading:
    """Decrypts a partial sum with the hospitals' shared keys (any hospital can).

    Args:
      aggregator: the :class:`~pppml_jax.secure.SecureAggregator` whose keys sealed it.
      message: a ``"partial"`` message from the transcript.
    """
    keys = aggregator.keys.hospital
    where = f"reading of message {message.hop}"
    env = open_sealed(keys.mac_key, message.payload, where=where)
    if env.kind != "partial":
        raise ValueError(f"{where}: a {env.kind} message, not a partial sum")
    values, moduli = {}, {}
    for name, data in unpack_sections(env.body, where=where).items():
        backend = aggregator.backend if name == "encrypted" else _masked_backend(aggregator)
        secret = keys.secret_for(name)
        total = backend.decrypt(secret, backend.deserialize(secret, bytes(data), where=where))
        if name == "masked":
            total = total - pad_sum(
                keys.pad_key,
                modulus=backend.modulus,
                size=total.size,
                session=env.session,
                round_index=env.round_index,
                attempt=env.attempt,
                positions=range(env.hop + 1),
            )
        values[name] = np.mod(total, np.int64(backend.modulus))
        moduli[name] = backend.modulus
    return PartialReading(
        env.sender, env.receiver, env.hop, env.attempt, env.round_index, env.session, values, moduli
    )


def _masked_backend(aggregator: Any) -> Any:
    if aggregator.backend.name == "plain":
        return aggregator.backend
    from pppml_jax.secure.backends import PlainBackend, PlainConfig

    return PlainBackend(PlainConfig(bits=32))


def difference(later: PartialReading, earlier: PartialReading, channel: str) -> np.ndarray:
    """``later - earlier`` centered modulo M: the contributions added in between (int64)."""
    m = later.moduli[channel]
    return centered(later.values[channel] - earlier.values[channel], m)


def known_pair_masks(
    aggregator: Any,
    result: AggregationResult,
    victim: int,
    knowers: Iterable[int],
    *,
    channel: str,
    size: int,
) -> np.ndarray:
    """The part of ``victim``'s pairwise mask that the hospitals ``knowers`` can compute.

    Each knower j holds its pair seed with the victim, so it knows ``sign * m_{victim,j}``;
    the masks the victim shares with hospitals outside the coalition stay unknown.

    Returns:
      ``[size]`` int64 residues modulo the channel's modulus (zeros without pairwise masks).
    """
    modulus = result.stats.moduli[channel]
    if channel not in result.stats.pairwise_channels:
        return np.zeros(size, np.int64)
    pairs = aggregator.pair_secrets(bytes.fromhex(result.stats.session))
    seeds = {j: pairs[j].seed_with(victim) for j in knowers if j != victim and j in pairs}
    return signed_mask_sum(
        seeds, victim, modulus=modulus, size=size, attempt=result.stats.attempts - 1,
        channel=channel,
    )  # fmt: skip


def to_update_units(
    ints: np.ndarray, result: AggregationResult, channel: str, fraction: float, like: Any
) -> np.ndarray:
    """Integers of one client's contribution -> update units ``[num_params]`` (flat order).

    Valid for a channel that carries every leaf back to back (``encrypt=None``).
    """
    leaves = jax.tree_util.tree_leaves(like)
    sizes = [int(np.size(x)) for x in leaves]
    ranges = np.repeat(list(result.stats.leaf_ranges.values()), sizes)
    scale = result.stats.scales[channel]
    return np.asarray(ints[: sum(sizes)], np.float64) / (scale * fraction) * ranges


def read_result(message: Message, like: Any) -> Any:
    """The published aggregate from the result message, as a pytree shaped like ``like``.

    What the relay (or anyone who sees the result message) reads; each leaf is in the dtype
    of ``like``'s leaf, bit for bit ``res.aggregate``.
    """
    if message.kind != "result":
        raise ValueError(f"a {message.kind} message, not the result")
    data = relay_sections(message)["aggregate"]
    leaves, treedef = jax.tree_util.tree_flatten(like)
    out, pos = [], 0
    for leaf in leaves:
        arr = np.asarray(leaf)
        n = arr.size * arr.dtype.itemsize
        out.append(np.frombuffer(data[pos : pos + n], arr.dtype).reshape(arr.shape).copy())
        pos += n
    if pos != len(data):
        raise InvalidOptionError(f"result holds {len(data)} bytes; `like` describes {pos}")
    return jax.tree_util.tree_unflatten(treedef, out)


def ring_positions(result: AggregationResult, num_clients: int) -> Sequence[int]:
    """Ring order of the successful attempt (initiator first), from the transcript."""
    attempt = result.stats.attempts - 1
    msgs = sorted(
        (m for m in result.transcript if m.kind == "partial" and m.attempt == attempt),
        key=lambda m: m.hop,
    )
    return [m.sender for m in msgs]
