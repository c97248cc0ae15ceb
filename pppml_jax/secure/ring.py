"""The cyclic secure aggregation ring: hospitals, a forwarding relay, one round of messages.

One attempt of a round, with the ring ``c_0 (initiator), c_1, ..., c_{n-1}``:

0. every party knows the public weight fractions ``p_i`` and each channel's quantisation;
1. ``c_0`` draws a mask R uniform modulo M (per channel), quantises its update, encrypts
   ``R + q_0`` and sends it, through the relay, to ``c_1`` (message 0);
2. ``c_k`` checks the message (authentication tag, sender, round, attempt, hop), quantises
   and encrypts its own ``q_k`` with fresh randomness, adds it to the running ciphertext and
   sends the sum to ``c_{k+1}`` (message k); masked-only values also get a relay pad;
3. ``c_0`` receives message n-1, decrypts, subtracts R (and the relay pads) modulo M,
   dequantises and publishes the aggregate to the relay (message n, kind ``"result"``).

A party that drops out before its work is done makes the attempt fail; the ring is then
re-formed without it (a new attempt: fresh mask, renormalised weights) or the round is aborted.
Every failure raises a :class:`~pppml_jax.secure.errors.SecureAggregationError` and changes
nothing outside this module's objects.
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
    InvalidUpdateError,
    RingTooSmallError,
    SecureAggregationError,
    TwoPartyRingWarning,
)
from pppml_jax.secure.keys import HospitalKeys, RelayKeys
from pppml_jax.secure.messages import RELAY, Message
from pppml_jax.secure.parties import Attempt, Channel, Hospital, Offline, PhaseTimer, Relay
from pppml_jax.secure.quantize import QuantSpec, make_spec
from pppml_jax.secure.tree import FlatUpdates


@dataclass
class RingOutcome:
    """What one completed round produced (before assembly into a pytree)."""

    initiator: int
    participants: tuple[int, ...]
    dropped: list[tuple[int, int, int]]
    attempts: int
    channel_means: dict[str, np.ndarray]
    specs: dict[str, QuantSpec]
    clipped: dict[int, int]
    transcript: list[Message]
    hop_seconds: list[float]
    timer: PhaseTimer
    late_offline: list[int]
    faults_triggered: list[Any] = field(default_factory=list)


def _fractions(weights: Sequence[float], members: Sequence[int]) -> dict[int, float]:
    total = float(sum(weights[i] for i in members))
    return {i: float(weights[i]) / total for i in members}


def check_ring_size(n: int, *, allow_two_party: bool, context: str) -> None:
    """Refuses rings below three (two only with ``allow_two_party``, with a warning)."""
    if n >= 3:
        return
    if n == 2 and allow_two_party:
        warnings.warn(
            f"{context}: a ring of 2 clients; each one can subtract its own update from the "
            "aggregate and learn the other's update exactly",
            TwoPartyRingWarning,
            stacklevel=4,
        )
        return
    hint = " or pass allow_two_party=True to accept that leak" if n == 2 else ""
    raise RingTooSmallError(
        f"{context}: {n} client(s) in the ring; secure aggregation needs at least 3 (with 2, "
        f"each learns the other's update from the aggregate){hint}"
    )


def run_ring(
    flat: FlatUpdates,
    weights: Sequence[float],
    *,
    round_index: int,
    initiator: int,
    keys_hospital: HospitalKeys,
    keys_relay: RelayKeys,
    channels: Sequence[Channel],
    clip: float,
    stochastic: bool,
    seed: int | None,
    on_dropout: str,
    allow_two_party: bool,
    faults: Sequence[faults_lib.Fault],
    mask_source: masking.ByteSource,
    assemble: Callable[[dict[str, np.ndarray]], np.ndarray],
) -> RingOutcome:
    """Runs one round of the ring (re-forming it after dropouts if asked).

    Args:
      flat: the validated updates (one entry per client).
      weights: ``[n]`` non-negative weights with a positive sum.
      round_index: the federation round.
      initiator: index of the initiator of attempt 0.
      keys_hospital, keys_relay: the two halves of the key set.
      channels: how the leaves travel (encrypted and/or masked-only).
      clip: the clip range C.
      stochastic: stochastic rounding.
      seed: seed of stochastic rounding (``None``: OS entropy).
      on_dropout: ``"reform"`` or ``"abort"``.
      allow_two_party: accept a ring of two after dropouts (with a warning).
      faults: simulated faults.
      mask_source: byte source of the masks.
      assemble: maps the per-channel means to the flat aggregate the initiator publishes.

    Raises:
      SecureAggregationError: any failure; the exception carries ``.transcript``.
    """
    n_all = len(flat.leaves)
    timer = PhaseTimer()
    relay = Relay(keys_relay, faults)
    hospitals = {
        i: Hospital(
            i,
            flat.leaves[i],
            keys_hospital,
            channels,
            timer,
            None if seed is None else (int(seed), int(round_index)),
        )
        for i in range(n_all)
    }
    members = list(range(n_all))
    order = members[initiator:] + members[:initiator]
    dropped: list[tuple[int, int, int]] = []
    attempt = 0
    start_time = time.perf_counter()
    try:
        while True:
            fractions = _fractions(weights, order)
            specs = {
                ch.name: make_spec(
                    clip=clip,
                    num_parties=len(order),
                    modulus=ch.backend.modulus,
                    max_abs_each=ch.backend.max_abs_each,
                    max_abs_sum=ch.backend.max_abs_sum,
                    stochastic=stochastic,
                )
                for ch in channels
            }
            att = Attempt(round_index, attempt, tuple(order), fractions, specs)
            for h in hospitals.values():
                h.clipped = 0
            hop_seconds: list[float] = []
            try:
                means = _one_attempt(att, hospitals, relay, mask_source, hop_seconds, assemble)
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
                if sum(weights[c] for c in order) <= 0:
                    raise InvalidUpdateError(
                        f"round {round_index}: the clients left after dropouts all have weight 0"
                    ) from None
                attempt += 1
    except SecureAggregationError as err:
        err.transcript = list(relay.transcript)  # type: ignore[attr-defined]
        raise
    timer.seconds["total"] = time.perf_counter() - start_time
    late = [
        c for c in order if faults_lib.is_offline(faults, c, attempt=attempt, hop=len(order) + 1)
    ]
    return RingOutcome(
        initiator=order[0],
        participants=tuple(sorted(order)),
        dropped=dropped,
        attempts=attempt + 1,
        channel_means=means,
        specs=specs,
        clipped={i: hospitals[i].clipped for i in order},
        transcript=list(relay.transcript),
        hop_seconds=hop_seconds,
        timer=timer,
        late_offline=late,
        faults_triggered=list(relay.triggered),
    )


def _one_attempt(
    att: Attempt,
    hospitals: dict[int, Hospital],
    relay: Relay,
    mask_source: masking.ByteSource,
    hop_seconds: list[float],
    assemble: Callable[[dict[str, np.ndarray]], np.ndarray],
) -> dict[str, np.ndarray]:
    """One pass around the ring; raises ``Offline`` when a needed party is offline."""
    first = hospitals[att.order[0]]
    t0 = time.perf_counter()
    relay.check_online(first.index, attempt=att.attempt, hop=0)
    message = first.start(att, mask_source)
    hop_seconds.append(time.perf_counter() - t0)
    for position in range(1, att.n):
        party = att.order[position]
        delivered = relay.forward(message, receiver=party)
        t0 = time.perf_counter()
        relay.check_online(party, attempt=att.attempt, hop=position)
        message = hospitals[party].forward(att, position, delivered)
        hop_seconds.append(time.perf_counter() - t0)
    delivered = relay.forward(message, receiver=first.index)
    relay.check_online(first.index, attempt=att.attempt, hop=att.n)
    means = first.finish(att, delivered)
    relay.forward(first.publish(att, assemble(means)), receiver=RELAY)
    return means
