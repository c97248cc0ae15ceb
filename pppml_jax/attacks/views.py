"""Every party's view of a victim's update in one round of cyclic secure aggregation (host code).

One real round of :class:`pppml_jax.secure.SecureAggregator` is run with the victim as the
initiator (so its outgoing message holds its own update and the mask only). From the
transcript and the key material each party legitimately holds, this module rebuilds, as
update-shaped pytrees an attacker can feed to iDLG:

- ``plain``: the victim's update itself, what a plain FedAvg server receives;
- ``relay``: the relay's copy of the victim's message, a ciphertext; nothing in it parses as an
  update, so for completeness its bytes are read as float32 values;
- ``next_client``: what the victim's successor reads after decrypting that message with the
  hospitals' shared key: the masked integers ``R + q mod M``, dequantised;
- ``aggregate``: the published weighted mean, what every client receives at the end;
- ``aggregate_minus_own``: an observing client's best estimate of the others,
  ``(aggregate - p_j u_j) / (1 - p_j)``; with two clients this is the victim's update exactly
  (the two-party leak).

An attacker knows that a real update lies in the public clip range ``[-C, C]``, so views that
fall outside it are clipped to it and non-finite values set to 0 (``sanitize``): the most
favourable reading of the bytes, stated in the diagnostics.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from pppml_jax.secure import SecureAggregator, TwoPartyRingWarning
from pppml_jax.secure.masking import pad_sum
from pppml_jax.secure.messages import (
    HEADER_BYTES,
    TAG_BYTES,
    Message,
    open_sealed,
    unpack_sections,
)
from pppml_jax.secure.quantize import centered
from pppml_jax.secure.tree import FlatUpdates, flatten_updates

VIEWS = ("plain", "relay", "next_client", "aggregate", "aggregate_minus_own")
"""Names of the views :func:`party_views` returns, in presentation order."""


@dataclass(frozen=True)
class PartyViews:
    """What each party holds about the victim's update after one round.

    Attributes:
      views: view name (see :data:`VIEWS`) -> pytree shaped like the updates (float32 numpy),
        already sanitised (finite, clipped to ``[-C, C]``).
      diagnostics: view name -> facts about the raw view before sanitising (``values``,
        ``non_finite``, ``beyond_clip`` fractions, ``max_abs``; for the relay
        ``payload_bytes`` and ``bytes_per_value``; for the next client the ``modulus``).
      victim: client index of the victim (the round's initiator).
      next_client: client index of the victim's successor on the ring.
      observer: client index whose own update is subtracted in ``aggregate_minus_own``.
      weights: the public weight fractions ``p_i``.
      backend: the encryption backend's name.
      clipped: values clipped by the protocol over all clients (0 when ``clip`` covers them).
    """

    views: dict[str, Any]
    diagnostics: dict[str, dict[str, Any]]
    victim: int
    next_client: int
    observer: int
    weights: tuple[float, ...]
    backend: str
    clipped: int


def sanitize(values: np.ndarray, *, clip: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Sets non-finite values to 0 and clips to ``[-clip, clip]``; reports what it changed.

    Args:
      values: ``[d]`` raw values (any float dtype).
      clip: the protocol's public clip range C.

    Returns:
      ``(clean [d] float32, facts)`` with ``values``, ``non_finite`` and ``beyond_clip``
      (fractions of the values) and ``max_abs`` (largest finite magnitude).
    """
    with np.errstate(invalid="ignore"):  # signalling NaNs among arbitrary bytes
        raw = np.asarray(values, np.float64).reshape(-1)
    finite = np.isfinite(raw)
    clean = np.where(finite, raw, 0.0)
    facts = {
        "values": int(raw.size),
        "non_finite": float(1.0 - finite.mean()) if raw.size else 0.0,
        "beyond_clip": float(np.mean(np.abs(clean) > clip)) if raw.size else 0.0,
        "max_abs": float(np.max(np.abs(clean))) if raw.size else 0.0,
    }
    return np.clip(clean, -clip, clip).astype(np.float32), facts


def _to_tree(flat: FlatUpdates, values: np.ndarray) -> Any:
    """``[d]`` values in flatten order -> a float32 pytree shaped like the updates."""
    leaves, start = [], 0
    for size in flat.sizes:
        leaves.append(values[start : start + size])
        start += size
    tree = flat.unflatten(leaves)
    return jax.tree.map(lambda x: np.asarray(x, np.float32), tree)


def _victim_message(transcript: Sequence[Message], victim: int) -> Message:
    attempt = max(m.attempt for m in transcript)
    for m in transcript:
        if m.kind == "partial" and m.sender == victim and m.attempt == attempt and m.hop == 0:
            return m
    raise ValueError(f"the transcript holds no partial sum sent by client {victim} at hop 0")


def _channel(aggregator: SecureAggregator) -> str:
    """Name of the channel that carries every leaf (``encrypt=None``)."""
    return "masked" if aggregator.backend.name == "plain" else "encrypted"


def _relay_view(message: Message, channel: str, num_params: int, clip: float):
    """The relay's reading: the channel's ciphertext bytes as little-endian float32 values.

    The relay can read the envelope's framing (it is authenticated, not encrypted): the
    40-byte header, then the sections, then the 32-byte tag (``pppml_jax.secure.messages``).
    """
    payload = message.payload
    sections = unpack_sections(payload[HEADER_BYTES:-TAG_BYTES], where="relay view")
    data = bytes(sections[channel])
    values = np.frombuffer(data[: (len(data) // 4) * 4], "<f4")[:num_params]
    if values.size < num_params:  # fewer bytes than an update: repeat them
        values = np.resize(values, num_params)
    clean, facts = sanitize(values, clip=clip)
    facts.update(payload_bytes=len(payload), bytes_per_value=len(payload) / num_params)
    return clean, facts


def _decrypt_as_hospital(
    aggregator: SecureAggregator, message: Message, sizes: Sequence[int]
) -> np.ndarray:
    """What the message's receiver reads: decrypted, pads removed, centered integers ``[d]``."""
    keys = aggregator.keys.hospital
    where = f"attack view of client {message.receiver}"
    env = open_sealed(keys.mac_key, message.payload, where=where)
    sections = unpack_sections(env.body, where=where)
    name = _channel(aggregator)
    if set(sections) != {name}:
        raise ValueError(
            f"the victim's message carries channels {sorted(sections)}; the attack views need "
            f"every leaf in the {name!r} channel (run the round with encrypt=None)"
        )
    backend = aggregator.backend
    secret = keys.secret_for(name)
    total = backend.decrypt(secret, backend.deserialize(secret, bytes(sections[name]), where=where))
    if name == "masked":  # every hospital can remove the relay pads, not the mask
        total = total - pad_sum(
            keys.pad_key,
            modulus=backend.modulus,
            size=total.size,
            round_index=env.round_index,
            attempt=env.attempt,
            positions=env.hop + 1,
        )
    # Every leaf travels back to back from offset 0 (flat layout): the update is a prefix.
    return centered(total, backend.modulus)[: sum(sizes)]


def party_views(
    updates: Sequence[Any],
    weights: Sequence[float],
    *,
    victim: int = 0,
    observer: int | None = None,
    backend: str = "bfv",
    clip: float = 1.0,
    aggregator: SecureAggregator | None = None,
    **backend_options: Any,
) -> PartyViews:
    """Runs one round of cyclic secure aggregation and rebuilds every party's view.

    Args:
      updates: list (one per client, n >= 2) of update pytrees with one structure.
      weights: ``[n]`` public client weights (training-sample counts).
      victim: the client whose update is attacked; it is made the initiator
        (``round_index = victim``, round-robin).
      observer: the client in ``aggregate_minus_own`` (default: the last client that is not
        the victim).
      backend: ``"plain"``, ``"bfv"``, ``"ckks"`` or ``"concrete"``.
      clip: the protocol's clip range C (public); choose it above the updates' largest
        magnitude so the aggregate is exact (``PartyViews.clipped`` says if it was not).
      aggregator: reuse this :class:`~pppml_jax.secure.SecureAggregator` (and its keys).
      **backend_options: options of the backend (e.g. ``preset="lean"`` for CKKS).

    Returns:
      A :class:`PartyViews`.

    Raises:
      ValueError: ``victim`` or ``observer`` out of range, or fewer than two clients.
      pppml_jax.secure.SecureAggregationError: the round itself failed.
    """
    n = len(updates)
    if n < 2:
        raise ValueError(f"{n} update(s): party views need at least two clients")
    if not (isinstance(victim, int) and 0 <= victim < n):
        raise ValueError(f"victim={victim!r} must be a client index in [0, {n})")
    if observer is None:
        observer = max(i for i in range(n) if i != victim)
    if not (isinstance(observer, int) and 0 <= observer < n and observer != victim):
        raise ValueError(f"observer={observer!r} must be a client index in [0, {n}), not victim")
    agg = aggregator if aggregator is not None else SecureAggregator(backend, **backend_options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TwoPartyRingWarning)
        res = agg.aggregate(
            updates,
            weights,
            round_index=victim,
            clip=clip,
            encrypt=None,
            allow_two_party=n == 2,
        )
    if res.initiator != victim:
        raise ValueError(f"round {victim} started at client {res.initiator}, not the victim")
    flat = flatten_updates(updates)
    fractions = np.asarray(weights, np.float64) / float(np.sum(weights))
    views, diagnostics = {}, {}

    own = np.concatenate(flat.leaves[victim])
    clean, facts = sanitize(own, clip=clip)
    views["plain"], diagnostics["plain"] = _to_tree(flat, clean), facts

    channel = _channel(agg)
    message = _victim_message(res.transcript, victim)
    clean, facts = _relay_view(message, channel, flat.num_params, clip)
    views["relay"], diagnostics["relay"] = _to_tree(flat, clean), facts

    masked = _decrypt_as_hospital(agg, message, flat.sizes)
    values = masked / res.stats.scales[channel] / fractions[victim]
    clean, facts = sanitize(values, clip=clip)
    facts["modulus"] = int(res.stats.moduli[channel])
    views["next_client"], diagnostics["next_client"] = _to_tree(flat, clean), facts

    aggregate = np.concatenate(
        [np.asarray(x, np.float64).reshape(-1) for x in jax.tree.leaves(res.aggregate)]
    )
    clean, facts = sanitize(aggregate, clip=clip)
    views["aggregate"], diagnostics["aggregate"] = _to_tree(flat, clean), facts

    mine = np.clip(np.concatenate(flat.leaves[observer]), -clip, clip)
    rest = (aggregate - fractions[observer] * mine) / (1.0 - fractions[observer])
    clean, facts = sanitize(rest, clip=clip)
    views["aggregate_minus_own"], diagnostics["aggregate_minus_own"] = _to_tree(flat, clean), facts

    order = list(range(victim, n)) + list(range(victim))
    return PartyViews(
        views=views,
        diagnostics=diagnostics,
        victim=victim,
        next_client=order[1],
        observer=observer,
        weights=tuple(float(f) for f in fractions),
        backend=agg.backend.name,
        clipped=res.stats.clipped_total,
    )
