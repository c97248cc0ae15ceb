"""The one local-training loop: batches per step, the algorithm's step, the loss sum.

The federation engine and the public :func:`~pppml_jax.algorithms.client_update.make_client_update`
both train clients with these functions, so the tests of one cover the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from pppml_jax.algorithms.base import Algorithm, Context
from pppml_jax.algorithms.batching import sample_batch
from pppml_jax.typing import Batch, ModelState, PRNGKey


class ClientCarry(NamedTuple):
    """A client's state between local steps, as the engine threads it."""

    algorithm: Any  # the algorithm's carry (Algorithm.client_init)
    model_state: ModelState  # the model's state (BatchNorm statistics) or None
    loss_sum: jax.Array  # [] float32, the sum of the step losses so far


def draw_batch(key, data, num_examples, batch_size: int, batch_rng: str | None = None):
    """:func:`sample_batch`, plus a fresh key's data under ``batch_rng`` when that is set.

    ``batch_rng`` names an entry holding ``[2]`` uint32 key data
    (``jax.random.wrap_key_data`` turns it back into a key), for losses that need randomness
    such as dropout.
    """
    batch = sample_batch(key, data, num_examples, batch_size)
    if batch_rng is None:
        return batch
    if not isinstance(batch, dict):
        raise ValueError(f"batch_rng={batch_rng!r} needs dict batches, got {type(batch).__name__}")
    return {**batch, batch_rng: jax.random.key_data(jax.random.fold_in(key, 0x5EED))}


def draw_batches(
    key: PRNGKey,
    t: jax.Array | int,
    data: Batch,
    num_examples: jax.Array | int,
    count: int,
    batch_size: int,
    batch_rng: str | None = None,
) -> tuple[Batch, ...]:
    """The ``count`` independent batches of local step ``t``, from ``fold_in(key, t)``."""
    keys = jax.random.split(jax.random.fold_in(key, t), count)
    return tuple(
        draw_batch(keys[j], data, num_examples, batch_size, batch_rng) for j in range(count)
    )


def start_client(
    algorithm: Algorithm, ctx: Context, broadcast: Any, client_state: Any, model_state: ModelState
) -> ClientCarry:
    """A client's carry before local step 0."""
    return ClientCarry(
        algorithm.client_init(ctx, broadcast, client_state),
        model_state,
        jnp.zeros((), jnp.float32),
    )


def local_step(
    algorithm: Algorithm,
    ctx: Context,
    carry: ClientCarry,
    data: Batch,
    num_examples: jax.Array | int,
    key: PRNGKey,
    t: jax.Array | int,
    broadcast: Any,
    client_state: Any,
    *,
    batch_size: int,
    batch_rng: str | None = None,
) -> ClientCarry:
    """Local step ``t`` of one client: draw its batches, take the algorithm's step.

    Args:
      data: the client's examples, a pytree of ``[N, ...]`` arrays padded to a common ``N``.
      num_examples: scalar int, the number of real examples (rows beyond are never read).
      key: the client's round key; step ``t`` draws from ``fold_in(key, t)``.
      t: the step index (int or traced int32).
    """
    batches = draw_batches(
        key, t, data, num_examples, algorithm.batches_per_step, batch_size, batch_rng
    )
    inner, model_state, loss = algorithm.client_step(
        ctx, carry.algorithm, carry.model_state, batches, t, broadcast, client_state
    )
    return ClientCarry(inner, model_state, carry.loss_sum + loss.astype(jnp.float32))


def run_steps(
    step: Callable[[jax.Array | int, Any], Any], carry: Any, local_steps: int, *, unroll: bool
) -> Any:
    """Applies ``carry = step(t, carry)`` for ``t < local_steps``, unrolled or rolled.

    Unrolled steps run convolutions much faster on XLA:CPU than a rolled loop
    (jax-ml/jax#12868); a rolled ``fori_loop`` compiles faster for many steps.
    """
    if unroll:
        for t in range(local_steps):
            carry = step(t, carry)
        return carry
    return jax.lax.fori_loop(0, local_steps, step, carry)
