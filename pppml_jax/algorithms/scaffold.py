"""SCAFFOLD: FedAvg whose local steps are corrected by control variates against client drift.

References:
  Karimireddy, Kale, Mohri, Reddi, Stich, Suresh, "SCAFFOLD: Stochastic Controlled Averaging
  for Federated Learning", ICML 2020, https://arxiv.org/abs/1910.06378
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from pppml_jax.algorithms.base import (
    Algorithm,
    Context,
    apply_mean_delta,
    loss_and_grad,
    model_delta,
    start_model,
    step_model,
)
from pppml_jax.algorithms.standard import check_positive
from pppml_jax.typing import Params


class ScaffoldServer(NamedTuple):
    """The server's state."""

    opt_state: optax.OptState  # the server optimizer's state
    control: Params  # c, the server control variate (structure and shapes of the params)


class ScaffoldClient(NamedTuple):
    """A client's persistent state."""

    control: Params  # c_i, the client control variate (structure of the params; zeros at 0)


class ScaffoldBroadcast(NamedTuple):
    """What every sampled client receives."""

    params: Params  # x, the server model
    control: Params  # c, the server control variate


class ScaffoldMessage(NamedTuple):
    """What a client sends (averaged with sample-count weights)."""

    delta_params: Params  # y_i - x, the change of the model (structure of the params)
    delta_control: Params  # c_i+ - c_i, the change of the client's control variate


def scaffold(*, lr: float | None = None) -> Algorithm:
    """SCAFFOLD with option II control variates.

    With server model ``x``, server control ``c`` and client control ``c_i`` (zeros before
    round 0), a sampled client starts at ``y = x`` and takes ``K = local_steps`` steps::

        y <- y - lr (g_i(y) - c_i + c)            # the local optimizer along g - c_i + c
        c_i+ = c_i - c + (x - y) / (K lr)         # option II
        sends (y - x, c_i+ - c_i)

    and the server, with ``p`` = participation (sampled / all clients)::

        x <- server optimizer step along -mean(y - x)     # sgd(1): x + mean(y - x)
        c <- c + p mean(c_i+ - c_i)

    Means are weighted by the clients' sample counts (the paper's uniform mean when the
    counts are equal). Option II's ``(x - y) / (K lr)`` is the mean corrected gradient when
    the local optimizer is SGD (the published setting); with Adam it is only a surrogate.

    Args:
      lr: the local step size (None: the run's ``lr``).

    References:
      Karimireddy et al., ICML 2020, https://arxiv.org/abs/1910.06378

    Example:
      >>> hist = pj.federation.run(loss, params, clients, algorithm=pj.algorithms.scaffold())
    """
    check_positive("lr", lr)

    def init_server(ctx: Context, params: Params) -> ScaffoldServer:
        opt_state = ctx.server_optimizer(ctx.hp["server_lr"]).init(params)
        return ScaffoldServer(opt_state, jax.tree.map(jnp.zeros_like, params))

    def init_client(ctx: Context, params: Params) -> ScaffoldClient:
        del ctx
        return ScaffoldClient(jax.tree.map(jnp.zeros_like, params))

    def broadcast(ctx: Context, params: Params, server_state: ScaffoldServer):
        del ctx
        return ScaffoldBroadcast(params, server_state.control)

    def client_init(ctx, b, client_state):
        del client_state
        return start_model(ctx, b.params, ctx.hp["lr"])

    def client_step(ctx, carry, model_state, batches, t, b, client_state):
        del t
        loss, grads, model_state = loss_and_grad(ctx, carry.params, model_state, batches[0])
        corrected = jax.tree.map(
            lambda g, ci, c: g - ci + c, grads, client_state.control, b.control
        )
        return step_model(ctx, carry, corrected, ctx.hp["lr"]), model_state, loss

    def client_final(ctx, carry, b, client_state):
        scale = jnp.asarray(1.0 / (ctx.local_steps * ctx.hp["lr"]))
        control = jax.tree.map(
            lambda ci, c, x, y: (ci - c + (x - y) * scale.astype(x.dtype)).astype(ci.dtype),
            client_state.control,
            b.control,
            b.params,
            carry.params,
        )
        message = ScaffoldMessage(
            model_delta(carry.params, b.params), model_delta(control, client_state.control)
        )
        return message, ScaffoldClient(control)

    def server_update(ctx, params, server_state, mean):
        params, opt_state = apply_mean_delta(ctx, params, server_state.opt_state, mean.delta_params)
        p = ctx.participation
        control = jax.tree.map(
            lambda c, dc: (c + p * dc).astype(c.dtype), server_state.control, mean.delta_control
        )
        return params, ScaffoldServer(opt_state, control)

    options: dict[str, Any] = {"control_variates": "option II"}
    return Algorithm(
        name="scaffold",
        client_init=client_init,
        client_step=client_step,
        client_final=client_final,
        server_update=server_update,
        init_server=init_server,
        init_client=init_client,
        broadcast=broadcast,
        hparams={"lr": lr},
        options=options,
    )
