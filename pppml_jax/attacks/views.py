"""Every party's view of a victim's update in one round of cyclic secure aggregation (host code).

Real rounds of :class:`pppml_jax.secure.SecureAggregator` are run and read back through the
public transcript reader :mod:`pppml_jax.secure.transcript`, using only what each party
legitimately holds (the relay: the bytes on the wire; a hospital: the ring's shared keys and
its own pair seeds). Each view is an update-shaped pytree an attacker can feed to iDLG.

:func:`party_views` runs a round with the victim as the initiator (its outgoing message holds
its own update and the mask R only) and returns what single parties see:

- ``plain``: the victim's update itself, what a plain FedAvg server receives;
- ``relay``: the relay's copy of the victim's message, a ciphertext; nothing in it parses as an
  update, so for completeness its bytes are read as float32 values;
- ``next_client``: what the victim's successor reads after decrypting that message with the
  hospitals' shared key: ``R + q (+ pair masks) mod M``, dequantised;
- ``aggregate``: the published weighted mean, what every client receives at the end;
- ``aggregate_minus_own``: an observing client's best estimate of the others,
  ``(aggregate - p_j u_j) / (1 - p_j)``; with two clients this is the victim's update exactly
  (the two-party leak).

:func:`collusion_views` runs a round in which the victim is *not* the initiator (it sits at
ring position 1) and returns what two coalitions rebuild by subtracting the running sum that
enters the victim from the one that leaves it, then removing the pair masks they know:

- ``relay_plus_hospital``: the relay (both messages' bytes) plus one hospital (the shared
  keys, its pair seed with the victim);
- ``colluding_neighbours``: the victim's predecessor (which sent the incoming sum) and
  successor (which receives the outgoing one), with their two pair seeds.

Without pairwise masks both coalitions isolate the victim's quantised update exactly; with
them (the default for ``plain`` and ``bfv``) it stays hidden by its masks with every honest
hospital outside the coalition.

An attacker knows that a real update lies in the public clip range ``[-C, C]``, so views that
fall outside it are clipped to it and non-finite values set to 0 (``sanitize``): the most
favourable reading of the bytes, stated in the diagnostics.

Size: about 445 lines, over the project's 400, because each view is a short function of the
same transcript reads and round setup; the two entry points (party_views, collusion_views)
share them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from pppml_jax.secure import AggregationResult, Message, SecureAggregator, TwoPartyRingWarning
from pppml_jax.secure import transcript as tx

VIEWS = ("plain", "relay", "next_client", "aggregate", "aggregate_minus_own")
"""Names of the views :func:`party_views` returns, in presentation order."""

COLLUSION_VIEWS = ("relay_plus_hospital", "colluding_neighbours")
"""Names of the views :func:`collusion_views` returns, in presentation order."""


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
      round_index: the round index the view's round ran under.
    """

    views: dict[str, Any]
    diagnostics: dict[str, dict[str, Any]]
    victim: int
    next_client: int
    observer: int
    weights: tuple[float, ...]
    backend: str
    clipped: int
    round_index: int = 0


@dataclass(frozen=True)
class CollusionViews:
    """What two coalitions rebuild of the victim's update (see :func:`collusion_views`).

    Attributes:
      views: view name (see :data:`COLLUSION_VIEWS`) -> sanitised float32 pytree.
      diagnostics: view name -> facts before sanitising (as :class:`PartyViews`), plus
        ``coalition`` (client indices), ``pairwise`` and ``unknown_masks`` (pair masks of the
        victim with hospitals outside the coalition).
      coalitions: view name -> the colluding hospitals' client indices (the relay colludes in
        ``relay_plus_hospital``).
      victim: client index of the victim (ring position 1).
      initiator: client index of the round's initiator (the victim's predecessor).
      pairwise: whether the round carried pairwise masks.
      threshold: the Shamir threshold t (0 without pairwise masks).
      weights: the public weight fractions ``p_i``.
      backend: the encryption backend's name.
      clipped: values clipped by the protocol over all clients.
      round_index: the round index the round ran under.
    """

    views: dict[str, Any]
    diagnostics: dict[str, dict[str, Any]]
    coalitions: dict[str, tuple[int, ...]]
    victim: int
    initiator: int
    pairwise: bool
    threshold: int
    weights: tuple[float, ...]
    backend: str
    clipped: int
    round_index: int


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


def _flat(tree: Any) -> np.ndarray:
    """A pytree's leaves in flatten order, concatenated as float64 ``[d]``."""
    return np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in jax.tree.leaves(tree)])


def _to_tree(like: Any, values: np.ndarray) -> Any:
    """``[d]`` values in flatten order -> a float32 pytree shaped like ``like``."""
    leaves, treedef = jax.tree_util.tree_flatten(like)
    out, start = [], 0
    for leaf in leaves:
        shape = np.shape(leaf)
        size = int(np.prod(shape, dtype=np.int64))
        out.append(np.asarray(values[start : start + size], np.float32).reshape(shape))
        start += size
    return jax.tree_util.tree_unflatten(treedef, out)


def _centered(residues: np.ndarray, modulus: int) -> np.ndarray:
    """Residues modulo ``modulus`` -> representatives in ``(-modulus/2, modulus/2]`` (int64)."""
    r = np.mod(np.asarray(residues, np.int64), np.int64(modulus))
    return np.where(r > modulus // 2, r - np.int64(modulus), r)


def _channel(aggregator: SecureAggregator) -> str:
    """Name of the channel that carries every leaf (``encrypt=None``)."""
    return "masked" if aggregator.backend.name == "plain" else "encrypted"


def _members(weights: Sequence[float]) -> list[int]:
    """The ring's members: clients of positive weight, in list order."""
    return [i for i, w in enumerate(weights) if float(w) > 0]


def fresh_round(aggregator: SecureAggregator, position: int, ring_size: int) -> int:
    """The smallest unused round index whose round-robin initiator is ring position ``position``.

    A :class:`~pppml_jax.secure.SecureAggregator` refuses a round index that already completed
    (fresh sessions, issue 12), so repeated views on one aggregator step through
    ``position, position + n, position + 2n, ...``.
    """
    used = {r for _, r in aggregator.completed_rounds()}
    r = position % ring_size
    while r in used:
        r += ring_size
    return r


def _run_round(
    agg: SecureAggregator,
    updates: Sequence[Any],
    weights: Sequence[float],
    *,
    initiator: int,
    clip: float,
    **options: Any,
) -> AggregationResult:
    """One round with ``initiator`` starting the ring (round robin), every leaf in one channel."""
    members = _members(weights)
    round_index = fresh_round(agg, members.index(initiator), len(members))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TwoPartyRingWarning)
        res = agg.aggregate(
            updates,
            weights,
            round_index=round_index,
            clip=clip,
            encrypt=None,
            allow_two_party=len(members) == 2,
            **options,
        )
    if res.initiator != initiator:
        raise ValueError(f"round {round_index} started at client {res.initiator}, not {initiator}")
    return res


def _reading(agg: SecureAggregator, message: Message) -> tx.PartialReading:
    """A hospital's decryption of ``message``, refusing rounds that split the update."""
    reading = tx.read_partial(agg, message)
    name = _channel(agg)
    if set(reading.values) != {name}:
        raise ValueError(
            f"the message carries channels {sorted(reading.values)}; the attack views need "
            f"every leaf in the {name!r} channel (run the round with encrypt=None)"
        )
    return reading


def hospital_integers(agg: SecureAggregator, message: Message, num_params: int) -> np.ndarray:
    """What the message's receiver reads: decrypted, relay pads removed, centered ``[d]`` ints.

    Every leaf travels back to back from offset 0 (flat layout), so the update is a prefix.
    """
    reading = _reading(agg, message)
    name = _channel(agg)
    return _centered(reading.values[name], reading.moduli[name])[:num_params]


def _relay_view(message: Message, channel: str, num_params: int, clip: float):
    """The relay's reading: the channel's ciphertext bytes as little-endian float32 values."""
    data = tx.relay_sections(message)[channel]
    values = np.frombuffer(data[: (len(data) // 4) * 4], "<f4")[:num_params]
    if values.size < num_params:  # fewer bytes than an update: repeat them
        values = np.resize(values, num_params)
    clean, facts = sanitize(values, clip=clip)
    size = len(message.payload)
    facts.update(payload_bytes=size, bytes_per_value=size / num_params)
    return clean, facts


def _check_clients(updates: Sequence[Any], weights: Sequence[float], victim: int) -> int:
    n = len(updates)
    if n < 2:
        raise ValueError(f"{n} update(s): party views need at least two clients")
    if len(weights) != n:
        raise ValueError(f"weights has {len(weights)} entries for {n} updates")
    if not (isinstance(victim, int) and 0 <= victim < n):
        raise ValueError(f"victim={victim!r} must be a client index in [0, {n})")
    if float(weights[victim]) <= 0:
        raise ValueError(f"victim={victim} has weight 0: it sends nothing")
    return n


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
    """Runs one round of cyclic secure aggregation and rebuilds every single party's view.

    Args:
      updates: list (one per client, n >= 2) of update pytrees with one structure.
      weights: ``[n]`` public client weights (training-sample counts).
      victim: the client whose update is attacked; it is made the initiator (the first unused
        round index ``r`` with ``r % n`` its ring position, round robin).
      observer: the client in ``aggregate_minus_own`` (default: the last client that is not
        the victim).
      backend: ``"plain"``, ``"bfv"``, ``"ckks"`` or ``"concrete"``.
      clip: the protocol's clip range C (public); choose it above the updates' largest
        magnitude so the aggregate is exact (``PartyViews.clipped`` says if it was not).
      aggregator: reuse this :class:`~pppml_jax.secure.SecureAggregator` (and its keys); each
        call takes a fresh round index on it.
      **backend_options: options of the backend (e.g. ``preset="lean"`` for CKKS).

    Returns:
      A :class:`PartyViews`.

    Raises:
      ValueError: ``victim`` or ``observer`` out of range, or fewer than two clients.
      pppml_jax.secure.SecureAggregationError: the round itself failed.
    """
    n = _check_clients(updates, weights, victim)
    if observer is None:
        observer = max(i for i in range(n) if i != victim)
    if not (isinstance(observer, int) and 0 <= observer < n and observer != victim):
        raise ValueError(f"observer={observer!r} must be a client index in [0, {n}), not victim")
    agg = aggregator if aggregator is not None else SecureAggregator(backend, **backend_options)
    res = _run_round(agg, updates, weights, initiator=victim, clip=clip)
    like = updates[0]
    num_params = sum(int(np.size(x)) for x in jax.tree.leaves(like))
    fractions = np.asarray(weights, np.float64) / float(np.sum(weights))
    views, diagnostics = {}, {}

    clean, facts = sanitize(_flat(updates[victim]), clip=clip)
    views["plain"], diagnostics["plain"] = _to_tree(like, clean), facts

    channel = _channel(agg)
    message = tx.message_from(res, sender=victim)
    clean, facts = _relay_view(message, channel, num_params, clip)
    views["relay"], diagnostics["relay"] = _to_tree(like, clean), facts

    masked = hospital_integers(agg, message, num_params)
    values = tx.to_update_units(masked, res, channel, fractions[victim], like)
    clean, facts = sanitize(values, clip=clip)
    facts["modulus"] = int(res.stats.moduli[channel])
    views["next_client"], diagnostics["next_client"] = _to_tree(like, clean), facts

    published = tx.read_result(tx.message_from(res, sender=victim, kind="result"), like)
    aggregate = _flat(published)
    clean, facts = sanitize(aggregate, clip=clip)
    views["aggregate"], diagnostics["aggregate"] = _to_tree(like, clean), facts

    mine = np.clip(_flat(updates[observer]), -clip, clip)
    rest = (aggregate - fractions[observer] * mine) / (1.0 - fractions[observer])
    clean, facts = sanitize(rest, clip=clip)
    views["aggregate_minus_own"], diagnostics["aggregate_minus_own"] = _to_tree(like, clean), facts

    order = tx.ring_positions(res, n)
    return PartyViews(
        views=views,
        diagnostics=diagnostics,
        victim=victim,
        next_client=int(order[1]),
        observer=observer,
        weights=tuple(float(f) for f in fractions),
        backend=agg.backend.name,
        clipped=res.stats.clipped_total,
        round_index=res.stats.round_index,
    )


def collusion_views(
    updates: Sequence[Any],
    weights: Sequence[float],
    *,
    victim: int = 0,
    hospital: int | None = None,
    pairwise: bool | None = None,
    backend: str = "bfv",
    clip: float = 1.0,
    aggregator: SecureAggregator | None = None,
    **backend_options: Any,
) -> CollusionViews:
    """Runs one round with the victim at ring position 1 and rebuilds what coalitions isolate.

    The round starts at the victim's predecessor (round index ``r`` with ``r % n`` one position
    before the victim). Each coalition decrypts the running sum that enters the victim and the
    one that leaves it (shared keys), subtracts them (``q_victim`` plus its pair masks) and
    removes the pair masks its members share with the victim.

    Args:
      updates: list (one per client, n >= 3) of update pytrees with one structure.
      weights: ``[n]`` public client weights; at least three positive.
      victim: the client whose update is attacked.
      hospital: the hospital colluding with the relay in ``relay_plus_hospital`` (default: the
        victim's successor).
      pairwise: pairwise masks on (``True``), off (``False``) or the backend's default
        (``None``: on for ``plain`` and ``bfv``).
      backend: ``"plain"`` or ``"bfv"`` (``ckks`` and ``concrete`` ciphertexts cannot carry
        pairwise masks; their ``pairwise=False`` reading works the same way).
      clip: the protocol's clip range C (public).
      aggregator: reuse this aggregator; it must have been made with
        ``record_pair_secrets=True`` when the round carries pairwise masks (simulation only:
        that is how the coalition's pair seeds are played).
      **backend_options: options of the backend.

    Returns:
      A :class:`CollusionViews`.

    Raises:
      ValueError: bad ``victim`` / ``hospital``, or fewer than three positive weights.
      pppml_jax.secure.SecureAggregationError: the round itself failed, or the aggregator
        does not record pair secrets.
    """
    _check_clients(updates, weights, victim)
    members = _members(weights)
    m = len(members)
    if m < 3:
        raise ValueError(f"{m} clients of positive weight: collusion views need a ring of 3+")
    pos = members.index(victim)
    pred, succ = members[(pos - 1) % m], members[(pos + 1) % m]
    if hospital is None:
        hospital = succ
    if not (isinstance(hospital, int) and hospital in members and hospital != victim):
        raise ValueError(
            f"hospital={hospital!r} must be a ring member (positive weight) other than the victim"
        )
    agg = aggregator
    if agg is None:
        agg = SecureAggregator(backend, record_pair_secrets=True, **backend_options)
    res = _run_round(agg, updates, weights, initiator=pred, clip=clip, pairwise=pairwise)
    like = updates[0]
    channel = _channel(agg)
    modulus = int(res.stats.moduli[channel])
    before = _reading(agg, tx.message_from(res, sender=pred))
    after = _reading(agg, tx.message_from(res, sender=victim))
    diff = tx.difference(after, before, channel)
    fractions = np.asarray(weights, np.float64) / float(np.sum(weights))
    masked = channel in res.stats.pairwise_channels
    coalitions = {"relay_plus_hospital": (hospital,), "colluding_neighbours": (pred, succ)}
    views, diagnostics = {}, {}
    for name, coalition in coalitions.items():
        known = tx.known_pair_masks(agg, res, victim, coalition, channel=channel, size=diff.size)
        ints = _centered(diff - known, modulus)
        values = tx.to_update_units(ints, res, channel, fractions[victim], like)
        clean, facts = sanitize(values, clip=clip)
        unknown = [j for j in members if j != victim and j not in coalition] if masked else []
        facts.update(
            coalition=list(coalition), pairwise=masked, unknown_masks=len(unknown), modulus=modulus
        )
        views[name], diagnostics[name] = _to_tree(like, clean), facts
    return CollusionViews(
        views=views,
        diagnostics=diagnostics,
        coalitions=coalitions,
        victim=victim,
        initiator=pred,
        pairwise=masked,
        threshold=int(res.stats.threshold),
        weights=tuple(float(f) for f in fractions),
        backend=agg.backend.name,
        clipped=res.stats.clipped_total,
        round_index=res.stats.round_index,
    )
