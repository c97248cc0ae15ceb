"""Secure aggregation of your own updates: ``pj.secure.cyclic_aggregate``, plain and BFV.

Three hospitals each hold a model update (any pytree: here a dense layer's kernel and bias)
and a sample count. One call sends the updates around the cyclic ring: masked only
(``backend="plain"``) or masked and encrypted (``backend="bfv"``, exact packed integers).
The result is the sample-weighted mean, equal to the plain numpy computation up to the
quantisation error. ``round_index`` is the federation round: it selects the initiator and
is authenticated in every message, so pass a new one every round. Values beyond ``clip``
(default 1.0) are clipped to it and counted in ``res.stats.clipped``: scale updates, or pass
a larger ``clip=``, so that nothing is clipped.

Run: ``python examples/secure_aggregation.py`` (a few seconds on a CPU; BFV needs TenSEAL,
``pip install pppml-jax[fhe]``).
"""

from __future__ import annotations

import importlib.util

import numpy as np

import pppml_jax as pj

BACKENDS = ("plain", "bfv") if importlib.util.find_spec("tenseal") else ("plain",)
"""BFV needs TenSEAL (the ``fhe`` extra); without it the example runs the plain ring only."""


def make_updates(seed: int = 0) -> tuple[list[dict[str, np.ndarray]], list[float]]:
    """Three clients' updates (same pytree structure) and their sample counts."""
    rng = np.random.default_rng(seed)
    updates = [
        {
            "kernel": (0.01 * rng.normal(size=(16, 4))).astype(np.float32),
            "bias": (0.01 * rng.normal(size=4)).astype(np.float32),
        }
        for _ in range(3)
    ]
    return updates, [60.0, 40.0, 80.0]


def numpy_weighted_mean(updates, weights) -> dict[str, np.ndarray]:
    """The reference: ``sum_i w_i u_i / sum_i w_i`` per leaf, in float64."""
    w = np.asarray(weights, np.float64)
    return {
        key: np.tensordot(w, np.stack([u[key] for u in updates]).astype(np.float64), 1) / w.sum()
        for key in updates[0]
    }


def main() -> dict[str, dict[str, float]]:
    """Aggregates with both backends; returns each one's error and bytes per parameter."""
    updates, weights = make_updates()
    expected = numpy_weighted_mean(updates, weights)
    out = {}
    for round_index, backend in enumerate(BACKENDS):
        res = pj.secure.cyclic_aggregate(updates, weights, backend=backend, round_index=round_index)
        error = max(float(np.max(np.abs(res.aggregate[k] - expected[k]))) for k in expected)
        out[backend] = {
            "max_abs_error": error,
            "initiator": res.initiator,
            "messages": len(res.transcript),
            "bytes_per_param": float(res.stats.bytes_per_param),
            "clipped": int(sum(res.stats.clipped.values())),
        }
    return out


if __name__ == "__main__":
    summary = main()
    for backend, row in summary.items():
        print(f"{backend:5s}: max |secure - numpy weighted mean| = {row['max_abs_error']:.1e}, "
              f"initiator {row['initiator']}, {row['messages']} messages, "
              f"{row['bytes_per_param']:.1f} bytes per parameter")  # fmt: skip
