"""What a secure-aggregation call returns: the aggregate, the transcript and statistics."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pppml_jax.secure.backends import Backend, BackendInfo
from pppml_jax.secure.errors import ClippingWarning
from pppml_jax.secure.messages import Message
from pppml_jax.secure.tree import FlatUpdates, float_eps


@dataclass(frozen=True)
class AggregationStats:
    """Measurements and bookkeeping of one call (units in each field's name or doc).

    Attributes:
      backend: the encryption backend's :class:`BackendInfo` (parameters, security).
      key_id: identifier of the key set used.
      session: the call's random session id (hex), bound into every message, pad and mask.
      round_index: the round.
      num_clients: clients passed in.
      participants: clients whose updates are in the aggregate (sorted).
      dropped: ``(client, attempt, hop)`` of every dropout (skipped or re-formed around).
      recovered: dropouts whose pairwise masks were removed with t revealed key shares
        (the round completed without restarting).
      offline_after_contributing: clients that went offline after forwarding their sum.
      attempts: 1, plus one per re-formed ring.
      pairwise: whether pairwise masks were added (per channel: ``pairwise_channels``).
      pairwise_channels: channel names that carried pairwise masks.
      threshold: t of the Shamir shares (0 without pairwise masks).
      clip: ``"auto"`` or the explicit clip range C.
      leaf_ranges: leaf name -> fixed-point range (update units) the leaf was quantised in;
        with ``clip="auto"`` the power of two above the largest magnitude any client had.
      clipped: per participant, how many values were clipped (always 0 with ``"auto"``).
      clip_excess: per participant, the largest ``|u| - C`` that was clipped away (0 if none).
      clipping_bound: largest change of any aggregate coordinate caused by clipping:
        ``sum_i p_i clip_excess_i`` (0 with ``"auto"``).
      num_params: values per update; ``encrypted_params`` of them went through the backend,
        ``masked_params`` were masked only.
      bytes_on_wire: total payload bytes of every message (setup, all attempts, result).
      ring_bytes: payload bytes of the partial sums of the successful attempt.
      bytes_per_param: ``ring_bytes / (participants * num_params)``: bytes per parameter on
        one link of the ring.
      messages: number of messages on the wire.
      seconds: wall seconds per phase (``setup``, ``quantize``, ``pairwise``, ``mask``,
        ``encrypt``, ``add``, ``serialize``, ``deserialize``, ``authenticate``,
        ``decrypt``, ``unmask``) and ``total`` (end to end, all parties simulated in one
        process, sequentially).
      hop_seconds: wall seconds of each party's step in the successful attempt (position 0
        is the initiator's start; decryption not included).
      scales: integers per range unit, per channel.
      moduli: modulus M per channel.
      quantization_bound: largest per-coordinate error of the quantisation (update units).
      error_bound: ``quantization_bound`` plus ``clipping_bound`` plus the rounding to each
        leaf's dtype: the largest ``|aggregate - sum_i p_i u_i|`` in any coordinate.
      faults_triggered: the simulated faults that were applied.
    """

    backend: BackendInfo
    key_id: str
    session: str
    round_index: int
    num_clients: int
    participants: tuple[int, ...]
    dropped: tuple[tuple[int, int, int], ...]
    recovered: tuple[int, ...]
    offline_after_contributing: tuple[int, ...]
    attempts: int
    pairwise: bool
    pairwise_channels: tuple[str, ...]
    threshold: int
    clip: float | str
    leaf_ranges: dict[str, float]
    clipped: dict[int, int]
    clip_excess: dict[int, float]
    clipping_bound: float
    num_params: int
    encrypted_params: int
    masked_params: int
    bytes_on_wire: int
    ring_bytes: int
    bytes_per_param: float
    messages: int
    seconds: dict[str, float]
    hop_seconds: tuple[float, ...]
    scales: dict[str, float]
    moduli: dict[str, int]
    quantization_bound: float
    error_bound: float
    faults_triggered: tuple[Any, ...]

    @property
    def clipped_total(self) -> int:
        """Values clipped over all participants."""
        return int(sum(self.clipped.values()))


@dataclass(frozen=True)
class AggregationResult:
    """What :func:`cyclic_aggregate` returns.

    Attributes:
      aggregate: pytree like the updates: ``sum_i p_i u_i`` over the participants (clipped
        values if an explicit ``clip`` clipped any), within ``stats.error_bound`` in every
        coordinate; leaves in the input dtypes, bit for bit what the result message carries.
      initiator: client index of the initiator of the successful attempt.
      transcript: every message in sending order, as delivered by the relay.
      stats: :class:`AggregationStats`.
    """

    aggregate: Any
    initiator: int
    transcript: list[Message]
    stats: AggregationStats


def build_result(
    flat: FlatUpdates,
    leaves: Sequence[np.ndarray],
    outcome: Any,
    *,
    channels: Sequence[Any],
    backend: Backend,
    key_id: str,
    session: bytes,
    clip: float | str,
    num_clients: int,
    encrypted_params: int,
    masked_params: int,
    round_index: int,
) -> AggregationResult:
    """Assembles the result of a completed ring (bounds, bytes, warning on clipping).

    Args:
      flat: the validated updates.
      leaves: the published ``[L]`` flat leaves, already in their dtypes.
      outcome: the ring's ``RingOutcome``.
      Others: bookkeeping copied into :class:`AggregationStats`.
    """
    n_part = len(outcome.participants)
    leaf_channel = {}
    for ch in channels:
        for lid in ch.layout.leaf_ids:
            leaf_channel[lid] = ch.name
    quant, total_bound = 0.0, 0.0
    for lid, (v, dt) in enumerate(zip(leaves, flat.dtypes, strict=True)):
        spec = outcome.specs[leaf_channel[lid]]
        q = n_part * spec.rounding_unit * outcome.leaf_ranges[lid] / (spec.scale * outcome.share)
        out_round = float(np.max(np.abs(v.astype(np.float64)))) * float_eps(dt) / 2 if v.size else 0
        quant = max(quant, q)
        total_bound = max(total_bound, q + out_round)
    fractions = outcome.fractions
    clipping = sum(fractions[i] * e for i, e in outcome.excess.items()) / outcome.share
    clipped_total = sum(outcome.clipped.values())
    if clipped_total:
        warnings.warn(
            f"round {round_index}: {clipped_total} update coordinate(s) beyond clip={clip} were "
            f"clipped (largest excess {max(outcome.excess.values()):.3g}); the aggregate may "
            f"differ from the weighted mean by up to {clipping:.3g} (included in "
            "stats.error_bound). Use clip='auto' to never clip.",
            ClippingWarning,
            stacklevel=4,
        )
    ring_msgs = [
        m for m in outcome.transcript if m.kind == "partial" and m.attempt == outcome.attempts - 1
    ]
    ring_bytes = sum(len(m.payload) for m in ring_msgs)
    stats = AggregationStats(
        backend=backend.info(),
        key_id=key_id,
        session=session.hex(),
        round_index=round_index,
        num_clients=num_clients,
        participants=outcome.participants,
        dropped=tuple(outcome.dropped),
        recovered=tuple(outcome.recovered),
        offline_after_contributing=tuple(outcome.late_offline),
        attempts=outcome.attempts,
        pairwise=any(ch.pairwise for ch in channels),
        pairwise_channels=tuple(ch.name for ch in channels if ch.pairwise),
        threshold=outcome.threshold,
        clip=clip,
        leaf_ranges={
            name: float(r) for name, r in zip(flat.names, outcome.leaf_ranges, strict=True)
        },
        clipped=dict(outcome.clipped),
        clip_excess=dict(outcome.excess),
        clipping_bound=float(clipping),
        num_params=flat.num_params,
        encrypted_params=encrypted_params,
        masked_params=masked_params,
        bytes_on_wire=sum(len(m.payload) for m in outcome.transcript),
        ring_bytes=ring_bytes,
        bytes_per_param=ring_bytes / (n_part * flat.num_params),
        messages=len(outcome.transcript),
        seconds=dict(outcome.timer.seconds),
        hop_seconds=tuple(outcome.hop_seconds),
        scales={k: s.scale for k, s in outcome.specs.items()},
        moduli={k: s.modulus for k, s in outcome.specs.items()},
        quantization_bound=float(quant),
        error_bound=float(total_bound + clipping),
        faults_triggered=tuple(outcome.faults_triggered),
    )
    aggregate = flat.unflatten(leaves)
    return AggregationResult(aggregate, outcome.initiator, outcome.transcript, stats)
