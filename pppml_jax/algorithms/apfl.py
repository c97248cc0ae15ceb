"""APFL: adaptive personalized FL, a per-client mix of a personal and the global model.

References:
  Deng, Kamani, Mahdavi, "Adaptive Personalized Federated Learning", 2020,
  https://arxiv.org/abs/2003.13461
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

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


class ApflState(NamedTuple):
    """A client's persistent state."""

    params: Params  # v_i, the client's personal model (structure and shapes of the params)
    mix: jax.Array  # [] float32, the mixing weight a_i in [0, 1]


class ApflCarry(NamedTuple):
    """A client's training state within a round."""

    shared: ModelCarry  # w_i, the copy of the global model trained as in FedAvg
    personal: ModelCarry  # v_i and its optimizer state
    mix: jax.Array  # [] float32, a_i


def mixed(v: Params, w: Params, a: jax.Array) -> Params:
    """``a v + (1 - a) w`` leaf by leaf, in each leaf's dtype."""
    return jax.tree.map(lambda vi, wi: (a * vi + (1 - a) * wi).astype(wi.dtype), v, w)


def apfl(
    *,
    mix: float = 0.5,
    learn_mix: bool = True,
    lr: float | None = None,
    mix_lr: float | None = None,
) -> Algorithm:
    """APFL: each client learns a personal model ``v_i`` and how much of it to use.

    The personalized model of client ``i`` is ``a_i v_i + (1 - a_i) w``. Each local step, on
    one batch, from the current ``w_i`` (started at the server model ``w``), ``v_i``, ``a_i``
    with ``v~ = a_i v_i + (1 - a_i) w_i``::

        w_i <- w_i - lr grad f_i(w_i)                      # FedAvg
        v_i <- v_i - lr grad_v f_i(v~) = v_i - lr a_i grad f_i(v~)
        a_i <- clip(a_i - mix_lr <grad f_i(v~), v_i - w_i>, 0, 1)   # if learn_mix

    (``w_i`` and ``v_i`` with the local optimizer, ``a_i`` with plain SGD). The client sends
    ``w_i - w``; the server averages like FedAvg. "global" scores ``w``, "personalized" scores
    ``a_i v_i + (1 - a_i) w`` as it is. ``mix = 0`` fixed is FedAvg exactly.

    Args:
      mix: the initial mixing weight ``a_i`` of every client, in [0, 1] (the fixed one when
        ``learn_mix`` is False).
      learn_mix: whether each client learns its ``a_i`` by gradient steps.
      lr: the local step size of ``w_i`` and ``v_i`` (None: the run's ``lr``).
      mix_lr: the step size of ``a_i`` (None: the same as ``lr``).

    References:
      Deng et al. 2020, https://arxiv.org/abs/2003.13461

    Example:
      >>> alg = pj.algorithms.apfl(mix=0.25, learn_mix=False)
    """
    if isinstance(mix, bool) or not isinstance(mix, (int, float)) or not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix={mix!r} must be a number in [0, 1]")
    if not isinstance(learn_mix, bool):
        raise ValueError(f"learn_mix={learn_mix!r} must be True or False")
    check_positive("lr", lr)
    check_positive("mix_lr", mix_lr)
    hparams: dict[str, float | None] = {"lr": lr, "mix": float(mix)}
    if mix_lr is not None:
        hparams["mix_lr"] = float(mix_lr)

    def init_client(ctx: Context, params: Params) -> ApflState:
        return ApflState(params, jnp.asarray(ctx.hp["mix"], jnp.float32))

    def client_init(ctx, broadcast, client_state):
        lr_ = ctx.hp["lr"]
        return ApflCarry(
            start_model(ctx, broadcast, lr_),
            start_model(ctx, client_state.params, lr_),
            client_state.mix,
        )

    def client_step(ctx, carry, model_state, batches, t, broadcast, client_state):
        del t, broadcast, client_state
        batch = batches[0]
        w, v, a = carry.shared.params, carry.personal.params, carry.mix
        loss, g_w, model_state = loss_and_grad(ctx, w, model_state, batch)

        def mixed_loss(v_, a_):
            return ctx.loss_fn(mixed(v_, w, a_), model_state, batch)

        (_, model_state), (g_v, g_a) = jax.value_and_grad(mixed_loss, argnums=(0, 1), has_aux=True)(
            v, a
        )
        lr_ = ctx.hp["lr"]
        if learn_mix:
            step = ctx.hp.get("mix_lr", lr_)
            a = jnp.clip(a - step * g_a, 0.0, 1.0).astype(carry.mix.dtype)
        carry = ApflCarry(
            step_model(ctx, carry.shared, g_w, lr_), step_model(ctx, carry.personal, g_v, lr_), a
        )
        return carry, model_state, loss

    def client_final(ctx, carry, broadcast, client_state):
        del ctx, client_state
        return model_delta(carry.shared.params, broadcast), ApflState(
            carry.personal.params, carry.mix
        )

    def personal_model(ctx, params, client_state):
        del ctx
        return mixed(client_state.params, params, client_state.mix)

    return Algorithm(
        name="apfl",
        client_init=client_init,
        client_step=client_step,
        client_final=client_final,
        server_update=server_mean_delta,
        init_server=init_server_optimizer,
        init_client=init_client,
        personal_model=personal_model,
        fine_tune=False,
        hparams=hparams,
        options={"learn_mix": learn_mix},
    )
