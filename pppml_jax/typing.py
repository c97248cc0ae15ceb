"""Shared type aliases and callable protocols used across pppml-jax."""

from __future__ import annotations

from typing import Any, Protocol

import jax

Params = Any
"""A pytree of arrays: model parameters (e.g. Flax ``variables["params"]``)."""

Batch = Any
"""A pytree (usually a dict) of arrays that share a leading examples axis ``[B, ...]``."""

ModelState = Any
"""A pytree of non-trainable model state (e.g. BatchNorm ``batch_stats``), or ``None``."""

PRNGKey = jax.Array
"""A JAX PRNG key, as made by ``jax.random.key`` or ``jax.random.PRNGKey``."""

ClientId = int
"""Index of a client in the federation's client list (0-based)."""


class LossFn(Protocol):
    """``loss_fn(params, batch) -> scalar``: pure, jit- and vmap-able, differentiable in params."""

    def __call__(self, params: Params, batch: Batch) -> jax.Array: ...


class StatefulLossFn(Protocol):
    """``loss_fn(params, model_state, batch) -> (scalar, new_model_state)``.

    The form taken by models with non-trainable state such as BatchNorm statistics: the loss is
    computed in training mode and the updated state is returned beside it.
    """

    def __call__(
        self, params: Params, model_state: ModelState, batch: Batch
    ) -> tuple[jax.Array, ModelState]: ...


class EvalFn(Protocol):
    """``eval_fn(params, batch) -> [B]``: a per-example metric, higher is better (e.g. Dice)."""

    def __call__(self, params: Params, batch: Batch) -> jax.Array: ...
