"""Minibatches drawn from one client's padded examples, never touching the padding."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pppml_jax.typing import Batch, PRNGKey


def sample_indices(
    key: PRNGKey, num_examples: jax.Array | int, capacity: int, batch_size: int
) -> jax.Array:
    """Draws ``batch_size`` indices uniformly without replacement from ``[0, num_examples)``.

    Each example ``i`` gets its own uniform score from ``fold_in(key, i)``; the indices of the
    ``batch_size`` highest scores among the valid examples form the batch. The scores of the
    valid examples do not depend on ``capacity``, so padding a client further never changes its
    batches. When ``num_examples < batch_size`` the valid examples are repeated cyclically in
    that random order, so every batch still holds only real examples.

    Args:
      key: PRNG key for this batch.
      num_examples: scalar int, the number of valid (unpadded) examples, >= 1.
      capacity: the padded length of the examples axis (static).
      batch_size: the number of indices to return (static).

    Returns:
      ``[batch_size]`` int32 indices into the padded examples axis, all ``< num_examples``.
    """
    positions = jnp.arange(capacity, dtype=jnp.int32)
    scores = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i)))(positions)
    scores = jnp.where(positions < num_examples, scores, -1.0)
    order = jnp.argsort(-scores, stable=True).astype(jnp.int32)
    slots = jnp.arange(batch_size, dtype=jnp.int32) % jnp.maximum(num_examples, 1)
    return order[slots]


def take_batch(data: Batch, indices: jax.Array) -> Batch:
    """Gathers rows ``indices`` ``[B]`` of every leaf of ``data``: ``[N, ...]`` -> ``[B, ...]``."""
    return jax.tree.map(lambda x: jnp.take(x, indices, axis=0), data)


def sample_batch(
    key: PRNGKey, data: Batch, num_examples: jax.Array | int, batch_size: int
) -> Batch:
    """A random batch of ``batch_size`` real examples from padded ``data`` (see sample_indices)."""
    capacity = jax.tree.leaves(data)[0].shape[0]
    return take_batch(data, sample_indices(key, num_examples, capacity, batch_size))
