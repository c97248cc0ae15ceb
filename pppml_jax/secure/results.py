"""What a secure-aggregation call returns: the aggregate, the transcript and statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pppml_jax.secure.backends import BackendInfo
from pppml_jax.secure.messages import Message


@dataclass(frozen=True)
class AggregationStats:
    """Measurements and bookkeeping of one call (units in each field's name or doc).

    Attributes:
      backend: the encryption backend's :class:`BackendInfo` (parameters, security).
      key_id: identifier of the key set used.
      num_clients: clients passed in.
      participants: clients whose updates are in the aggregate (sorted).
      dropped: ``(client, attempt, hop)`` of every dropout that re-formed the ring.
      offline_after_contributing: clients that went offline after forwarding their sum.
      attempts: 1, plus one per re-formed ring.
      clipped: per participant, how many values were clipped to ``[-C, C]``.
      num_params: values per update; ``encrypted_params`` of them went through the backend,
        ``masked_params`` were masked only.
      bytes_on_wire: total payload bytes of every message (all attempts, result included).
      ring_bytes: payload bytes of the partial sums of the successful attempt.
      bytes_per_param: ``ring_bytes / (participants * num_params)``: bytes per parameter on
        one link of the ring.
      messages: number of messages on the wire.
      seconds: wall seconds per phase (``quantize``, ``mask``, ``encrypt``, ``add``,
        ``serialize``, ``deserialize``, ``authenticate``, ``decrypt``, ``unmask``) and
        ``total`` (end to end, all parties simulated in one process, sequentially).
      hop_seconds: wall seconds of each party's step in the successful attempt (position 0
        is the initiator's start; decryption not included).
      scales: integers per update unit, per channel.
      moduli: modulus M per channel.
      quantization_bound: largest per-coordinate error of the quantisation
        (``n * u / S``, the worst channel).
      error_bound: ``quantization_bound`` plus the rounding to the output dtype: the largest
        ``|aggregate - sum_i p_i clip(x_i)|`` in any coordinate.
      faults_triggered: the simulated faults that were applied.
    """

    backend: BackendInfo
    key_id: str
    num_clients: int
    participants: tuple[int, ...]
    dropped: tuple[tuple[int, int, int], ...]
    offline_after_contributing: tuple[int, ...]
    attempts: int
    clipped: dict[int, int]
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
      aggregate: pytree like the updates: ``sum_i p_i clip(u_i)`` over the participants,
        within ``stats.error_bound`` in every coordinate; leaves in the input dtypes.
      initiator: client index of the initiator of the successful attempt.
      transcript: every message in sending order, as delivered by the relay.
      stats: :class:`AggregationStats`.
    """

    aggregate: Any
    initiator: int
    transcript: list[Message]
    stats: AggregationStats
