"""Personalization at evaluation: a few SGD steps of size alpha on a client's own training data."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from pppml_jax.algorithms._tree import tree_axpy
from pppml_jax.typing import Batch, LossFn, Params


def personalize(
    loss_fn: LossFn,
    params: Params,
    batch: Batch | Sequence[Batch],
    *,
    alpha: float,
    steps: int = 1,
) -> Params:
    """Adapts ``params`` to one client with ``steps`` SGD steps of size ``alpha``.

    This is Per-FedAvg's personalization: ``w_i = w - alpha * grad f_i(w; D_i)``, repeated
    ``steps`` times. Pass the client's *training* data: its test data must never enter here.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: the global model, a pytree.
      batch: one batch (used for every step) or a sequence of ``steps`` batches (one per step).
      alpha: step size.
      steps: number of SGD steps (>= 0; 0 returns ``params`` unchanged).

    Returns:
      The personalized parameters, with the structure and dtypes of ``params``.

    Raises:
      TypeError: if ``steps`` is traced (not static under ``jax.jit``) or not an int.
      ValueError: if ``steps`` is negative or a sequence of batches has the wrong length.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):  # a tracer is not
        raise TypeError(
            f"steps={steps!r} must be a static Python int (it sets how many steps are traced); "
            "under jax.jit mark it static: jax.jit(pj.personalize, "
            "static_argnames=('loss_fn', 'steps'))"
        )
    if steps < 0:
        raise ValueError(f"steps={steps} must be >= 0")
    if isinstance(batch, (list, tuple)):
        if len(batch) != steps:
            raise ValueError(f"got {len(batch)} batches for steps={steps}; pass one per step")
        batches = list(batch)
    else:
        batches = [batch] * steps
    grad_fn = jax.grad(loss_fn)
    for b in batches:
        params = tree_axpy(-alpha, grad_fn(params, b), params)
    return params
