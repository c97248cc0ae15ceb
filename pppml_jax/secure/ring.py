"""The cyclic secure aggregation ring: hospitals, a forwarding relay, one round of messages.

One call (one session, a fresh random 16-byte id), with the ring ``c_0 (initiator), ...,
c_{n-1}`` of the clients with positive weight:

0. setup, every message through the relay and authenticated: with ``clip="auto"`` each
   hospital announces the power of two above each leaf's largest magnitude; with pairwise
   masks each publishes two X25519 public keys and sends every other hospital an encrypted
   Shamir share of its mask key (``pairwise.py``);
1. ``c_0`` draws a mask R uniform modulo M (per channel), encrypts ``R + q_0 (+ its pair
   masks)`` and sends it to ``c_1`` (message 0);
2. ``c_k`` checks the message (tag, round, session, context, sender, attempt, hop), adds its
   own encrypted contribution (quantised update, pair masks, relay pad on masked-only values)
   and sends the sum on (message k);
3. ``c_0`` decrypts message n-1, removes R, the pads and (for hospitals that dropped out) the
   pair masks rebuilt from t revealed shares, dequantises and publishes the aggregate.

A hospital that is offline when the running sum should reach it is skipped, with pairwise
masks, as long as t hospitals remain (its masks are removed at the close); without pairwise
masks, or when the initiator drops, the ring is re-formed without it (a new attempt: fresh R,
renormalised weights) or the round is aborted. Every failure raises a
:class:`~pppml_jax.secure.errors.SecureAggregationError` that carries ``.transcript``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pppml_jax.secure import faults as faults_lib
from pppml_jax.secure import masking
from pppml_jax.secure.errors import (
    ClientDropoutError,
    InvalidOptionError,
    RingTooSmallError,
    SecureAggregationError,
    TwoPartyRingWarning,
)
from pppml_jax.secure.keys import HospitalKeys, RelayKeys
from pppml_jax.secure.messages import RELAY, Message, context_digest
from pppml_jax.secure.pairwise import PairParty, default_threshold
from pppml_jax.secure.parties import ZERO_EXPONENT, Attempt, Channel, Hospital
from pppml_jax.secure.quantize import QuantSpec, make_spec
from pppml_jax.secure.relay import Offline, PhaseTimer, Relay
from pppml_jax.secure.tree import FlatUpdates


@dataclass
class RingOutcome:
    """What one completed round produced (before assembly into a pytree)."""

    initiator: int
    participants: tuple[int, ...]
    dropped: list[tuple[int, int, int]]
    recovered: list[int]
    attempts: int
    channel_means: dict[str, np.ndarray]
    specs: dict[str, QuantSpec]
    fractions: dict[int, float]
    share: float
    leaf_ranges: np.ndarray
    clipped: dict[int, int]
    excess: dict[int, float]
    transcript: list[Message]
    hop_seconds: list[float]
    timer: PhaseTimer
    late_offline: list[int]
    threshold: int
    faults_triggered: list[Any] = field(default_factory=list)


def check_ring_size(n: int, *, allow_two_party: bool, context: str) -> None:
    """Refuses rings of fewer than three clients with positive weight (two only if allowed)."""
    if n >= 3:
        return
    if n == 2 and allow_two_party:
        warnings.warn(
            f"{context}: a ring of 2 clients with positive weight; each one can subtract its "
            "own update from the aggregate and learn the other's update exactly",
            TwoPartyRingWarning,
            stacklevel=4,
        )
        return
    hint = " or pass allow_two_party=True to accept that leak" if n == 2 else ""
    raise RingTooSmallError(
        f"{context}: {n} client(s) with positive weight in the ring; secure aggregation needs "
        f"at least 3 (with 2, each learns the other's update from the aggregate){hint}"
    )


def _channel_ranges(ch: Channel, leaf_ranges: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    per_leaf = [np.full(s, r) for s, r in zip(sizes, leaf_ranges, strict=True)]
    out = ch.layout.gather(per_leaf)
    used = ch.layout.gather([np.ones(s) for s in sizes]) > 0
    return np.where(used, out, 1.0)


def _broadcast(relay: Relay, msgs: dict[int, Message]) -> None:
    for m in msgs.values():
        relay.forward(m, receiver=RELAY)


def run_ring(
    flat: FlatUpdates,
    weights: Sequence[float],
    *,
    members: Sequence[int],
    round_index: int,
    session: bytes,
    initiator: int,
    keys_hospital: HospitalKeys,
    keys_relay: RelayKeys,
    channels: Sequence[Channel],
    clip: float | str,
    stochastic: bool,
    seed: int | None,
    on_dropout: str,
    allow_two_party: bool,
    threshold: int | None,
    faults: Sequence[faults_lib.Fault],
    mask_source: masking.ByteSource,
    publish: Callable[[dict[str, np.ndarray], np.ndarray, float], bytes],
    keep_pairs: dict[int, Any] | None = None,
) -> RingOutcome:
    """Runs one round of the ring (skipping or re-forming after dropouts).

    Args:
      flat: the validated updates (one entry per client).
      weights: ``[n]`` normalised non-negative weights (largest 1).
      members: the clients with positive weight, in ring order from index 0.
      round_index: the federation round.
      session: the call's 16-byte random session id.
      initiator: client index of the initiator of attempt 0 (a member).
      keys_hospital, keys_relay: the two halves of the key set.
      channels: how the leaves travel (encrypted and/or masked-only).
      clip: ``"auto"`` or the explicit clip range C.
      stochastic: stochastic rounding.
      seed: seed of stochastic rounding (``None``: OS entropy).
      on_dropout: ``"reform"`` or ``"abort"``.
      allow_two_party: accept a ring of two after dropouts (with a warning).
      threshold: t of the Shamir shares (``None``: default).
      faults: simulated faults.
      mask_source: byte source of the initiator's mask R.
      publish: ``(channel means, leaf ranges, fraction share) -> result bytes``.
      keep_pairs: if given, receives each hospital's ``PairParty`` (simulation of collusion).

    Raises:
      SecureAggregationError: any failure; the exception carries ``.transcript``.
    """
    timer = PhaseTimer()
    relay = Relay(keys_relay, faults)
    pairwise = any(ch.pairwise for ch in channels)
    t = 0
    if pairwise:
        t = default_threshold(len(members)) if threshold is None else int(threshold)
        if t > len(members):
            raise InvalidOptionError(
                f"threshold={t} exceeds the {len(members)} clients with positive weight"
            )
    hospitals = {
        i: Hospital(
            i,
            flat.leaves[i],
            keys_hospital,
            channels,
            timer,
            None if seed is None else (int(seed), int(round_index)),
            PairParty(i, session) if pairwise else None,
        )
        for i in members
    }
    if keep_pairs is not None and pairwise:
        keep_pairs.update({i: h.pair for i, h in hospitals.items()})
    start = list(members).index(initiator)
    order = list(members[start:]) + list(members[:start])
    dropped: list[tuple[int, int, int]] = []
    attempt = 0
    start_time = time.perf_counter()

    def make_attempt(order: list[int], attempt: int, leaf_ranges: np.ndarray) -> Attempt:
        total = float(sum(weights[i] for i in order))
        fractions = {i: float(weights[i]) / total for i in order}
        specs = {
            ch.name: make_spec(
                clip=1.0,
                num_parties=len(order),
                modulus=ch.backend.modulus,
                max_abs_each=ch.backend.max_abs_each,
                max_abs_sum=ch.backend.max_abs_sum,
                stochastic=stochastic,
            )
            for ch in channels
        }
        all_fractions = [float(weights[i]) / total if i in fractions else 0.0
                         for i in range(len(weights))]  # fmt: skip
        ctx = context_digest(session, round_index, attempt, order, all_fractions)
        ranges = {ch.name: _channel_ranges(ch, leaf_ranges, flat.sizes) for ch in channels}
        return Attempt(
            round_index, attempt, tuple(order), fractions, specs, session, ctx, ranges, t
        )

    try:
        with timer.phase("setup"):
            leaf_ranges = _setup(flat, hospitals, relay, order, clip, make_attempt, t)
        while True:
            att = make_attempt(order, attempt, leaf_ranges)
            for h in hospitals.values():
                h.clipped, h.excess = 0, 0.0
            hop_seconds: list[float] = []
            try:
                means, positions, skipped = _one_attempt(
                    att,
                    hospitals,
                    relay,
                    mask_source,
                    hop_seconds,
                    dropped,
                    publish,
                    leaf_ranges,
                    recover=on_dropout != "abort",
                )
                break
            except Offline as off:
                dropped.append((off.client, attempt, off.hop))
                if on_dropout == "abort":
                    raise ClientDropoutError(
                        f"round {round_index}, attempt {attempt}: client {off.client} went "
                        f"offline at hop {off.hop}; round aborted (on_dropout='abort'), nothing "
                        "was aggregated"
                    ) from None
                # The survivors keep their ring order; if the initiator dropped out, the next
                # client in that order becomes the initiator.
                order = [c for c in order if c != off.client]
                check_ring_size(
                    len(order),
                    allow_two_party=allow_two_party,
                    context=f"round {round_index}, after client {off.client} dropped out",
                )
                attempt += 1
    except SecureAggregationError as err:
        err.transcript = list(relay.transcript)  # type: ignore[attr-defined]
        raise
    timer.seconds["total"] = time.perf_counter() - start_time
    contributors = [att.order[p] for p in positions]
    late = [
        c for c in contributors if faults_lib.is_offline(faults, c, attempt=attempt, hop=att.n + 1)
    ]
    return RingOutcome(
        initiator=att.order[0],
        participants=tuple(sorted(contributors)),
        dropped=dropped,
        recovered=skipped,
        attempts=attempt + 1,
        channel_means=means,
        specs=att.specs,
        fractions=att.fractions,
        share=float(sum(att.fractions[c] for c in contributors)),
        leaf_ranges=leaf_ranges,
        clipped={i: hospitals[i].clipped for i in contributors},
        excess={i: hospitals[i].excess for i in contributors},
        transcript=list(relay.transcript),
        hop_seconds=hop_seconds,
        timer=timer,
        late_offline=late,
        threshold=t,
        faults_triggered=list(relay.triggered),
    )


def _setup(flat, hospitals, relay, order, clip, make_attempt, t) -> np.ndarray:
    """Range announcements and pairwise key exchange; returns the ``[L]`` leaf ranges."""
    n_leaves = len(flat.sizes)
    att = make_attempt(order, 0, np.ones(n_leaves))
    if clip == "auto":
        msgs = {i: hospitals[i].announce_range(att, flat.names) for i in order}
        _broadcast(relay, msgs)
        reader = hospitals[order[0]]  # every hospital computes the same maximum
        exps = np.stack([reader.read_range(att, m, i) for i, m in msgs.items()])
        top = exps.max(axis=0).astype(np.float64)
        leaf_ranges = np.where(top == ZERO_EXPONENT, 1.0, np.exp2(top))
    else:
        leaf_ranges = np.full(n_leaves, float(clip))
    if t:
        msgs = {i: hospitals[i].announce_keys(att) for i in order}
        _broadcast(relay, msgs)
        for j in order:
            for i, m in msgs.items():
                if i != j:
                    hospitals[j].read_keys(att, m, i)
        for i in order:
            shares = hospitals[i].pair.split_key(order, t)
            for j in order:
                if j == i:
                    hospitals[i].pair.keep_share(i, shares[i])
                    continue
                delivered = relay.forward(hospitals[i].send_share(att, j, shares[j]), receiver=j)
                hospitals[j].read_share(att, delivered, i)
    return leaf_ranges


def _one_attempt(
    att: Attempt,
    hospitals: dict[int, Hospital],
    relay: Relay,
    mask_source: masking.ByteSource,
    hop_seconds: list[float],
    dropped: list[tuple[int, int, int]],
    publish: Callable[[dict[str, np.ndarray], np.ndarray, float], bytes],
    leaf_ranges: np.ndarray,
    *,
    recover: bool = True,
) -> tuple[dict[str, np.ndarray], list[int], list[int]]:
    """One pass around the ring; raises ``Offline`` when a needed party is offline.

    ``recover``: skip an offline hospital and remove its pairwise masks from the survivors'
    shares (when a threshold is set and enough remain); False raises ``Offline`` instead
    (``on_dropout="abort"``).

    Returns:
      ``(channel means, contributing positions, skipped clients)``.
    """
    order, n = att.order, att.n
    first = hospitals[order[0]]
    t0 = time.perf_counter()
    relay.check_online(first.index, attempt=att.attempt, hop=0)
    message = first.start(att, mask_source, receiver=order[1 % n])
    hop_seconds.append(time.perf_counter() - t0)
    positions, skipped = [0], []
    for position in range(1, n):
        party = order[position]
        nxt = order[(position + 1) % n]
        try:
            delivered = relay.forward(message, receiver=party)
            relay.check_online(party, attempt=att.attempt, hop=position)
        except Offline as off:
            live = n - len(skipped) - 1
            if not recover or not att.threshold or live < max(att.threshold, 3):
                raise
            skipped.append(party)
            dropped.append((off.client, att.attempt, off.hop))
            message = hospitals[order[positions[-1]]].reseal(att, receiver=nxt)
            continue
        t0 = time.perf_counter()
        sender = order[positions[-1]]
        message = hospitals[party].forward(
            att, position, delivered, sender=sender, sender_hop=positions[-1], receiver=nxt
        )
        positions.append(position)
        hop_seconds.append(time.perf_counter() - t0)
    delivered = relay.forward(message, receiver=first.index)
    relay.check_online(first.index, attempt=att.attempt, hop=n)
    revealed = _reveal(att, hospitals, relay, positions, skipped)
    means = first.finish(
        att,
        delivered,
        sender=order[positions[-1]],
        sender_hop=positions[-1],
        positions=positions,
        revealed=revealed,
    )
    share = float(sum(att.fractions[order[p]] for p in positions))
    relay.forward(first.publish(att, publish(means, leaf_ranges, share)), receiver=RELAY)
    return means, positions, skipped


def _reveal(att, hospitals, relay, positions, skipped) -> dict[int, dict[int, bytes]]:
    """At least t survivors reveal, to the initiator only, their shares of each dropout's key."""
    first = hospitals[att.order[0]]
    out: dict[int, dict[int, bytes]] = {}
    for d in skipped:
        shares: dict[int, bytes] = {}
        for p in positions:
            holder = att.order[p]
            if len(shares) == att.threshold:
                break
            if relay.is_offline(holder, attempt=att.attempt, hop=att.n):
                continue
            if holder == first.index:
                shares[holder] = first.pair.reveal_share(d, where=f"round {att.round_index}")
                continue
            msg = relay.forward(hospitals[holder].send_reveal(att, d), receiver=first.index)
            got_d, share = first.read_reveal(att, msg, holder)
            shares[holder] = share if got_d == d else b""
        if len(shares) < att.threshold:
            raise ClientDropoutError(
                f"round {att.round_index}: only {len(shares)} survivors could reveal shares of "
                f"client {d}'s mask key; {att.threshold} are needed"
            )
        out[d] = shares
    return out
