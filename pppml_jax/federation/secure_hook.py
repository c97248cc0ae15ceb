"""The secure hook: a round's client messages go around the cyclic secure ring on the host.

One :class:`SecureHook` per federation owns one ``pj.secure.SecureAggregator``: a fresh key
set per run (a resumed run in a new process gets new keys too), each round index completed
at most once under it, a failed round retried under a fresh session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from pppml_jax.federation.types import Message, RoundError


def _as_dict(message: Message) -> dict:
    """The ring's update pytree: the non-empty parts of a message, by name."""
    return {k: v for k, v in message._asdict().items() if jax.tree.leaves(v)}


class SecureHook:
    """Secure aggregation of one federation's rounds.

    Args:
      options: ``cyclic_aggregate`` options (``backend`` and its settings, ring options).
      seed: the run's seed (the ring's shared seed for stochastic rounding and a seeded
        initiator is derived from it and the round).

    Raises:
      ValueError: on an unknown backend or option (before any training).
    """

    def __init__(self, options: Mapping[str, Any], seed: int):
        from pppml_jax import secure  # host layer, imported only when used

        self._secure = secure
        options = dict(options)
        backend = options.pop("backend", "plain")
        agg_opts, self.ring_options = secure.aggregate.split_options(backend, options)
        try:
            self.aggregator = secure.SecureAggregator(backend, **agg_opts)
        except secure.SecureAggregationError as err:
            raise ValueError(f"secure options {dict(options, backend=backend)}: {err}") from err
        self.seed = seed

    def mean(
        self,
        round_index: int,
        messages: Sequence[Message],
        weights: Sequence[float],
        ids: np.ndarray,
    ) -> tuple[Message, dict]:
        """The weighted mean of ``messages`` through the ring.

        Args:
          round_index: the round (bound into the ring's messages).
          messages: one host :class:`Message` per sampled client, in ``ids`` order.
          weights: their aggregation weights (training-sample counts).
          ids: the sampled clients' ids.

        Returns:
          ``(mean, stats)``: the decrypted mean as a :class:`Message` of host arrays, and the
          ring's statistics for the round record (client ids, bytes, clipping, error bound).

        Raises:
          RoundError: when the ring fails; nothing of the round has been applied.
        """
        secure = self._secure
        template = messages[0]
        updates = [_as_dict(m) for m in messages]
        weights = [float(w) for w in weights]
        seed = self.seed * 1_000_003 + round_index
        try:
            try:
                res = self.aggregator.aggregate(
                    updates, weights, round_index=round_index, seed=seed, **self.ring_options
                )
            except secure.ReusedRoundError:
                # The round is being run again from an earlier state (a replay of the run):
                # a fresh key set, so no pad or mask of the first run is ever reused.
                self.aggregator.rotate_keys(round_index=round_index)
                res = self.aggregator.aggregate(
                    updates, weights, round_index=round_index, seed=seed, **self.ring_options
                )
        except secure.SecureAggregationError as err:
            raise RoundError(
                f"round {round_index}: secure aggregation failed ({err}); the federation state "
                "is unchanged"
            ) from err
        parts = dict(res.aggregate)
        mean = Message(
            **{
                k: jax.tree.map(np.asarray, parts[k]) if k in parts else getattr(template, k)
                for k in template._fields
            }
        )
        return mean, _stats(res, ids)


def _stats(res: Any, ids: np.ndarray) -> dict:
    st = res.stats
    return {
        "backend": st.backend.name,
        "initiator": int(ids[res.initiator]),
        "participants": [int(ids[i]) for i in st.participants],
        "dropped": [int(ids[c]) for c, *_ in st.dropped],
        "clipped": int(st.clipped_total),
        "clip_excess": max([0.0, *(float(v) for v in st.clip_excess.values())]),
        "clipping_bound": float(st.clipping_bound),
        "encrypted_params": st.encrypted_params,
        "messages": st.messages,
        "bytes": st.bytes_on_wire,
        "bytes_per_param": st.bytes_per_param,
        "seconds": st.seconds.get("total"),
        "error_bound": st.error_bound,
    }
