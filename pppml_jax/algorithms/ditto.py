"""Ditto: a personal model per client, regularised towards the global one.

References:
  Li, Hu, Beirami, Smith, "Ditto: Fair and Robust Federated Learning Through
  Personalization", ICML 2021, https://arxiv.org/abs/2012.04221
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from pppml_jax.algorithms.base import (
    Algorithm,
    Context,
    ModelCarry,
    init_server_optimizer,
    loss_and_grad,
    model_delta,
    server_mean_delta,
    start_model,
    step_model,
)
from pppml_jax.algorithms.standard import check_positive
from pppml_jax.typing import Params


class DittoState(NamedTuple):
    """A client's persistent state."""

    params: Params  # v_i, the client's personal model (structure and shapes of the params)


class DittoCarry(NamedTuple):
    """A client's training state within a round."""

    shared: ModelCarry  # the copy of the global model trained as in FedAvg
    personal: ModelCarry  # the personal model v_i and its optimizer state


def personal_step_size(ctx: Context) -> jax.Array:
    """``hp["personal_lr"]`` when the algorithm has one, else the local ``hp["lr"]``."""
    return ctx.hp.get("personal_lr", ctx.hp["lr"])


def ditto(*, lam: float, lr: float | None = None, personal_lr: float | None = None) -> Algorithm:
    """Ditto: FedAvg for the global model, plus a personal model pulled towards it.

    A sampled client receives ``w`` (the server model) and takes ``K = local_steps`` steps on
    each of two models, on the same batch::

        w_i <- w_i - lr grad f_i(w_i)                            # from w_i = w: FedAvg
        v_i <- v_i - personal_lr (grad f_i(v_i) + lam (v_i - w))  # the personal model

    (both with the local optimizer), sends ``w_i - w`` and keeps ``v_i`` (initialised to the
    initial global model). The server averages like FedAvg. "global" scores the server model,
    "personalized" scores ``v_i`` as it is (no fine-tuning). ``lam = 0`` is local training;
    a large ``lam`` keeps ``v_i`` near ``w`` (stable while ``personal_lr * lam <= 1`` with
    SGD). A stateful model's state (BatchNorm statistics) is threaded through the global
    step, then the personal step; the reported loss is the global copy's.

    Args:
      lam: the regularisation weight lambda (>= 0).
      lr: the local step size of the global copy (None: the run's ``lr``).
      personal_lr: the personal model's step size (None: the same as ``lr``).

    References:
      Li et al., ICML 2021, https://arxiv.org/abs/2012.04221

    Example:
      >>> hist = pj.federation.run(loss, params, clients, algorithm=pj.algorithms.ditto(lam=0.1))
    """
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam >= 0:
        raise ValueError(f"lam={lam!r} must be a number >= 0 (0: local training)")
    check_positive("lr", lr)
    check_positive("personal_lr", personal_lr)
    hparams: dict[str, float | None] = {"lr": lr, "lam": float(lam)}
    if personal_lr is not None:
        hparams["personal_lr"] = float(personal_lr)

    def init_client(ctx: Context, params: Params) -> DittoState:
        del ctx
        return DittoState(params)

    def client_init(ctx, broadcast, client_state):
        return DittoCarry(
            start_model(ctx, broadcast, ctx.hp["lr"]),
            start_model(ctx, client_state.params, personal_step_size(ctx)),
        )

    def client_step(ctx, carry, model_state, batches, t, broadcast, client_state):
        del t, client_state
        loss, g_w, model_state = loss_and_grad(ctx, carry.shared.params, model_state, batches[0])
        _, g_v, model_state = loss_and_grad(ctx, carry.personal.params, model_state, batches[0])
        lam_ = ctx.hp["lam"]
        g_v = jax.tree.map(
            lambda g, v, w: g + (lam_ * (v - w)).astype(g.dtype),
            g_v,
            carry.personal.params,
            broadcast,
        )
        carry = DittoCarry(
            step_model(ctx, carry.shared, g_w, ctx.hp["lr"]),
            step_model(ctx, carry.personal, g_v, personal_step_size(ctx)),
        )
        return carry, model_state, loss

    def client_final(ctx, carry, broadcast, client_state):
        del ctx, client_state
        return model_delta(carry.shared.params, broadcast), DittoState(carry.personal.params)

    def personal_model(ctx, params, client_state):
        del ctx, params
        return client_state.params

    return Algorithm(
        name="ditto",
        client_init=client_init,
        client_step=client_step,
        client_final=client_final,
        server_update=server_mean_delta,
        init_server=init_server_optimizer,
        init_client=init_client,
        personal_model=personal_model,
        fine_tune=False,
        hparams=hparams,
    )
