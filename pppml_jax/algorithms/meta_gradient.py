"""Per-FedAvg's local step in its three variants: first order, Hessian-free and exact.

Per-FedAvg minimises ``F(w) = (1/n) sum_i f_i(w - alpha grad f_i(w))``. One local step on
client ``i`` with independent batches ``D`` (``batch_a``), ``D'`` (``batch_b``) and ``D''``
(``batch_c``)::

    w~ = w - alpha * grad f(w; D);   g = grad f(w~; D')
    fo:    w <- w - beta * g
    hf:    w <- w - beta * (g - alpha * d),
           d = [grad f(w + delta g; D'') - grad f(w - delta g; D'')] / (2 delta)
    exact: w <- w - beta * (I - alpha * Hess f(w; D'')) g

"exact" computes the Hessian-vector product with ``jax.jvp`` of ``jax.grad``; no Hessian is
ever formed.

References:
  Fallah, Mokhtari, Ozdaglar, "Personalized Federated Learning with Theoretical Guarantees: A
  Model-Agnostic Meta-Learning Approach", NeurIPS 2020, https://arxiv.org/abs/2002.07948
"""

from __future__ import annotations

from typing import Literal

import jax

from pppml_jax.algorithms._tree import tree_axpy
from pppml_jax.typing import Batch, ModelState, Params, StatefulLossFn

Variant = Literal["fo", "hf", "exact"]
VARIANTS: tuple[str, ...] = ("fo", "hf", "exact")


def check_variant(variant: str) -> None:
    """Raises ``ValueError`` unless ``variant`` is one of ``"fo"``, ``"hf"``, ``"exact"``."""
    if variant not in VARIANTS:
        raise ValueError(
            f"variant={variant!r} is not a Per-FedAvg variant; use one of {', '.join(VARIANTS)}"
        )


def _grad_and_state(loss_fn: StatefulLossFn, params, state, batch):
    grads, new_state = jax.grad(loss_fn, has_aux=True)(params, state, batch)
    return grads, new_state


def meta_gradient_stateful(
    loss_fn: StatefulLossFn,
    params: Params,
    model_state: ModelState,
    batch_a: Batch,
    batch_b: Batch,
    batch_c: Batch | None = None,
    *,
    alpha: float,
    variant: Variant = "fo",
    delta: float = 1e-3,
) -> tuple[Params, ModelState]:
    """The Per-FedAvg update direction for a model with state (e.g. BatchNorm statistics).

    Args:
      loss_fn: ``loss_fn(params, model_state, batch) -> (scalar, new_model_state)``.
      params: pytree of parameters ``w``.
      model_state: the model's non-trainable state, threaded through the forward passes.
      batch_a: ``D``, the batch of the inner (adaptation) step.
      batch_b: ``D'``, the batch the adapted model's gradient is taken on.
      batch_c: ``D''``, the batch of the Hessian term ("hf", "exact"); ``None`` means ``batch_a``.
      alpha: inner step size.
      variant: ``"fo"``, ``"hf"`` or ``"exact"``.
      delta: finite-difference radius of the "hf" variant.

    Returns:
      ``(direction, new_model_state)``: the direction has the structure of ``params`` and the step
      is ``w - beta * direction``; the state is the one after the forward pass on ``D'``
      (the forward pass on ``D''`` is evaluated in the incoming state and its update discarded).
    """
    check_variant(variant)
    if batch_c is None:
        batch_c = batch_a
    grad_a, state_a = _grad_and_state(loss_fn, params, model_state, batch_a)
    adapted = tree_axpy(-alpha, grad_a, params)
    g, state_b = _grad_and_state(loss_fn, adapted, state_a, batch_b)
    if variant == "fo":
        return g, state_b

    def grad_c(p):
        return _grad_and_state(loss_fn, p, model_state, batch_c)[0]

    if variant == "hf":
        plus = grad_c(tree_axpy(delta, g, params))
        minus = grad_c(tree_axpy(-delta, g, params))
        curvature = jax.tree.map(lambda a, b: (a - b) / (2.0 * delta), plus, minus)
    else:  # exact: Hess f(w; D'') g, forward-over-reverse
        _, curvature = jax.jvp(grad_c, (params,), (g,))
    return tree_axpy(-alpha, curvature, g), state_b


def meta_direction(
    loss_fn: StatefulLossFn,
    params: Params,
    model_state: ModelState,
    batches: tuple[Batch, ...],
    *,
    alpha: float,
    variant: Variant = "fo",
    delta: float = 1e-3,
) -> tuple[Params, ModelState, jax.Array]:
    """One local step's ``(direction, new_model_state, loss)`` from 2 or 3 batches.

    ``batches`` is ``(D, D')`` or ``(D, D', D'')``; the loss reported is ``f(w; D)``. Shared by
    the ``perfedavg`` algorithm and :func:`~pppml_jax.algorithms.client_update.perfedavg_rule`.
    """
    batch_c = batches[2] if len(batches) > 2 else None
    loss, _ = loss_fn(params, model_state, batches[0])
    grads, new_state = meta_gradient_stateful(
        loss_fn,
        params,
        model_state,
        batches[0],
        batches[1],
        batch_c,
        alpha=alpha,
        variant=variant,
        delta=delta,
    )
    return grads, new_state, loss


def _stateless(loss_fn):
    def wrapped(params, state, batch):
        return loss_fn(params, batch), state

    return wrapped


def meta_gradient(
    loss_fn,
    params: Params,
    batch_a: Batch,
    batch_b: Batch,
    batch_c: Batch | None = None,
    *,
    alpha: float,
    variant: Variant = "fo",
    delta: float = 1e-3,
) -> Params:
    """The Per-FedAvg direction ``g`` (fo) or ``(I - alpha H) g`` (hf, exact) at ``params``.

    Same as :func:`meta_gradient_stateful` for ``loss_fn(params, batch) -> scalar``.
    """
    direction, _ = meta_gradient_stateful(
        _stateless(loss_fn),
        params,
        None,
        batch_a,
        batch_b,
        batch_c,
        alpha=alpha,
        variant=variant,
        delta=delta,
    )
    return direction


def perfedavg_step(
    loss_fn,
    params: Params,
    batch_a: Batch,
    batch_b: Batch,
    batch_c: Batch | None = None,
    *,
    alpha: float,
    beta: float,
    variant: Variant = "fo",
    delta: float = 1e-3,
) -> Params:
    """One local Per-FedAvg step: ``w - beta * meta_gradient(...)``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, pure, jit- and vmap-able.
      params: pytree of parameters.
      batch_a, batch_b, batch_c: the independent batches ``D``, ``D'``, ``D''`` (module docstring);
        ``batch_c=None`` means ``batch_a``.
      alpha: inner (personalization) step size.
      beta: outer (meta) step size.
      variant: ``"fo"`` (first order), ``"hf"`` (Hessian-free) or ``"exact"`` (Hessian-vector
        product).
      delta: finite-difference radius of ``"hf"``.

    Returns:
      The updated parameters, with the structure and dtypes of ``params``.

    Raises:
      ValueError: if ``variant`` is unknown.

    Example:
      >>> loss = lambda w, b: 0.5 * b["h"] * w**2        # f(w) = h w^2 / 2, grad = h w
      >>> b = {"h": jnp.asarray(2.0)}
      >>> perfedavg_step(loss, jnp.asarray(1.0), b, b, alpha=0.1, beta=0.5, variant="exact")
      Array(0.36, dtype=float32)                         # 1 - 0.5 (1 - 0.2) 2 (1 - 0.2)
    """
    direction = meta_gradient(
        loss_fn, params, batch_a, batch_b, batch_c, alpha=alpha, variant=variant, delta=delta
    )
    return tree_axpy(-beta, direction, params)
