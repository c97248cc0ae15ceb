"""Helpers of the secure-aggregation tests: the backend registry and random updates."""

from __future__ import annotations

import numpy as np

# Every backend configuration the contract tests run over. The slow backend gets tiny
# parameters (docs/method.md 4: concrete is slow and memory-hungry).
BACKEND_CASES = {
    "plain": {"backend": "plain"},
    "bfv": {"backend": "bfv"},
    "ckks-lean": {"backend": "ckks", "preset": "lean"},
    "ckks-paper": {"backend": "ckks", "preset": "paper"},
    "concrete": {"backend": "concrete", "bits": 12, "chunk_size": 32, "max_parties": 10},
}

SHAPES_A = {
    "params": {"Conv_0": {"kernel": (3, 3, 1, 2), "bias": (2,)}, "Dense_0": {"kernel": (5,)}}
}
SHAPES_B = [(4, 3), (7,), ()]


def random_tree(rng: np.random.Generator, shapes, scale: float = 0.3):
    """A pytree like ``shapes`` (dict / list of shape tuples) with float32 normal leaves."""
    if isinstance(shapes, dict):
        return {k: random_tree(rng, v, scale) for k, v in shapes.items()}
    if isinstance(shapes, list):
        return [random_tree(rng, v, scale) for v in shapes]
    return (rng.standard_normal(shapes) * scale).astype(np.float32)


def weighted_mean(updates, weights, clip: float | None = None):
    """Independent float64 reference: ``sum_i p_i clip(u_i)`` as a list of leaves.

    ``clip=None`` (the protocol's default ``clip="auto"``) clips nothing.
    """
    clip = np.inf if clip is None else clip
    import jax

    w = np.asarray(weights, np.float64) / np.sum(weights)
    leaves = [jax.tree_util.tree_leaves(u) for u in updates]
    return [
        sum(
            wi * np.clip(np.asarray(ls[j], np.float64), -clip, clip)
            for wi, ls in zip(w, leaves, strict=True)
        )
        for j in range(len(leaves[0]))
    ]
