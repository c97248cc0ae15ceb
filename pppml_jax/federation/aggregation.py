"""Sample-weighted averaging of client updates and the server's optax step (pure JAX)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from pppml_jax.typing import Params


def weighted_mean(stacked: Params, weights: jax.Array) -> Params:
    """``sum_i w_i x_i / sum_i w_i`` over the leading clients axis.

    Args:
      stacked: pytree of ``[m, ...]`` arrays, one row per client.
      weights: ``[m]`` non-negative weights (training-sample counts), not all zero.

    Returns:
      A pytree of ``[...]`` arrays with the leaves' dtypes (accumulated in float32).
    """
    w = weights.astype(jnp.float32)
    w = w / jnp.sum(w)
    return jax.tree.map(
        lambda x: jnp.tensordot(w, x.astype(jnp.float32), axes=1).astype(x.dtype), stacked
    )


def client_deltas(stacked: Params, reference: Params) -> Params:
    """``x_i - reference`` for every client row ``i`` of ``stacked`` (``[m, ...]`` leaves)."""
    return jax.tree.map(lambda x, r: x - r[None], stacked, reference)


def server_step(
    optimizer: optax.GradientTransformation,
    params: Params,
    opt_state: optax.OptState,
    mean_delta: Params,
) -> tuple[Params, optax.OptState]:
    """The server update along the pseudo-gradient ``-mean_delta = theta - mean_i theta_i``.

    With ``optax.sgd(1.0)`` the new model is exactly the weighted mean of the client models
    (the published code's rule, REFERENCE.md 1); other optax optimizers give FedAdam & co.
    """
    pseudo_grad = jax.tree.map(jnp.negative, mean_delta)
    updates, opt_state = optimizer.update(pseudo_grad, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def all_finite(tree: Params) -> jax.Array:
    """``[]`` bool: every element of every leaf is finite (per client when vmapped)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)
