"""FedAvg's local step: one SGD step on one batch (McMahan et al. 2017, arXiv 1602.05629)."""

from __future__ import annotations

import jax

from pppml_jax.algorithms._tree import tree_axpy
from pppml_jax.typing import Batch, LossFn, Params


def fedavg_step(loss_fn: LossFn, params: Params, batch: Batch, *, lr: float) -> Params:
    """One local FedAvg step: ``theta - lr * grad f(theta; batch)``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, pure and differentiable in ``params``.
      params: pytree of parameters.
      batch: pytree of arrays with a leading examples axis ``[B, ...]``.
      lr: step size (a Python float or a traced scalar).

    Returns:
      A pytree with the structure and dtypes of ``params``.

    Example:
      >>> loss = lambda w, b: 0.5 * ((w - b["y"]) ** 2).mean()
      >>> fedavg_step(loss, jnp.zeros(()), {"y": jnp.ones(4)}, lr=0.5)  # 0 - 0.5 * (0 - 1)
      Array(0.5, dtype=float32)
    """
    grads = jax.grad(loss_fn)(params, batch)
    return tree_axpy(-lr, grads, params)
