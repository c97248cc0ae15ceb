"""One measured round of secure aggregation (used by ``pppml bench secure`` and the benchmark).

:func:`measure` runs one configuration (a backend with options, leaf shapes, a number of
clients) on synthetic float32 deltas and returns timings, bytes and errors as a flat dict.
:func:`model_leaf_shapes` takes the leaf shapes from a real model's initialiser (for example
``pj.models.UNet2D``) without computing anything (``jax.eval_shape``).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from pppml_jax.secure.aggregate import SecureAggregator, split_options
from pppml_jax.secure.tree import key_path_name

LeafShapes = Sequence[tuple[str, tuple[int, ...]]]
"""``[(leaf name, shape)]`` in the model's flatten order."""


def model_leaf_shapes(init: Callable[[], Any]) -> list[tuple[str, tuple[int, ...]]]:
    """``[(name, shape)]`` of the leaves ``init()`` returns, via :func:`jax.eval_shape`.

    Example: ``model_leaf_shapes(lambda: UNet2D().init(key, x, train=False)["params"])``.
    """
    tree = jax.eval_shape(init)
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(key_path_name(p), tuple(leaf.shape)) for p, leaf in paths]


@dataclass(frozen=True)
class MeasureConfig:
    """One benchmark configuration.

    Attributes:
      label: name in tables (e.g. ``bfv``, ``bfv-pairwise``, ``paper-ckks``).
      backend: backend name.
      shapes: the update's leaf shapes.
      num_clients: n.
      options: backend and protocol options passed to the aggregator.
    """

    label: str
    backend: str
    shapes: LeafShapes
    num_clients: int
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def num_params(self) -> int:
        return int(sum(int(np.prod(s, dtype=np.int64)) for _, s in self.shapes))


def synthetic_updates(
    shapes: LeafShapes, num_clients: int, *, seed: int = 0
) -> tuple[list[dict], list[float]]:
    """Float32 deltas ~ N(0, 0.01^2) shaped like ``shapes``, and sample-count weights."""
    rng = np.random.default_rng(seed)
    updates = [
        {name: (rng.standard_normal(shape) * 0.01).astype(np.float32) for name, shape in shapes}
        for _ in range(num_clients)
    ]
    weights = rng.integers(50, 200, num_clients).astype(float).tolist()
    return updates, weights


def measure(config: MeasureConfig, *, seed: int = 0) -> dict[str, Any]:
    """Runs one round of ``config`` and returns its measurements.

    Returns:
      A flat dict: ``label``, ``backend``, ``num_params``, ``num_clients``, ``options``;
      ``keygen_s``; ``encrypt_s`` (mean per client), ``pairwise_s`` (all hospitals),
      ``setup_s``, ``hop_s`` (median wall time of a non-initiator's step), ``decrypt_s``,
      ``total_s`` (end to end, every party simulated in this process in turn);
      ``bytes_per_param`` (one ring link), ``ring_mb`` (partial sums), ``wire_mb`` (every
      message, setup included), ``messages``; ``max_error`` (against the float64 weighted
      mean) and ``error_bound``; ``encrypted_params``, ``pairwise``; ``peak_rss_mb``.
    """
    updates, weights = synthetic_updates(config.shapes, config.num_clients, seed=seed)
    backend_opts, ring_opts = split_options(config.backend, config.options)
    t0 = time.perf_counter()
    aggregator = SecureAggregator(config.backend, **backend_opts)
    _ = aggregator.keys
    keygen_s = time.perf_counter() - t0
    res = aggregator.aggregate(updates, weights, round_index=0, seed=seed, **ring_opts)
    p = np.asarray(weights) / np.sum(weights)
    max_error = 0.0
    for name in updates[0]:
        ref = sum(pi * u[name].astype(np.float64) for pi, u in zip(p, updates, strict=True))
        err = np.max(np.abs(res.aggregate[name].astype(np.float64) - ref))
        max_error = max(max_error, float(err))
    s = res.stats
    hops = s.hop_seconds[1:] or s.hop_seconds
    return {
        "label": config.label,
        "backend": config.backend,
        "num_params": config.num_params,
        "num_clients": config.num_clients,
        "options": dict(config.options),
        "keygen_s": keygen_s,
        "encrypt_s": s.seconds.get("encrypt", 0.0) / config.num_clients,
        "pairwise_s": s.seconds.get("pairwise", 0.0),
        "setup_s": s.seconds.get("setup", 0.0),
        "hop_s": float(np.median(hops)),
        "decrypt_s": s.seconds.get("decrypt", 0.0),
        "total_s": s.seconds["total"],
        "bytes_per_param": s.bytes_per_param,
        "ring_mb": s.ring_bytes / 1e6,
        "wire_mb": s.bytes_on_wire / 1e6,
        "messages": s.messages,
        "max_error": max_error,
        "error_bound": s.error_bound,
        "encrypted_params": s.encrypted_params,
        "pairwise": s.pairwise,
        "security": s.backend.security,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
