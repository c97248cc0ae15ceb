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
    ModelCarry,
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


class ScaffoldCarry(NamedTuple):
    """A client's training state between local steps."""

    model: ModelCarry  # y, the local model, and the local optimizer's state
    grad_sum: Params  # the sum of the raw minibatch gradients g_i(y_k) of the steps so far

    @property
    def params(self) -> Params:
        """``y``, the local model."""
        return self.model.params


class ScaffoldMessage(NamedTuple):
    """What a client sends (averaged with sample-count weights)."""

    delta_params: Params  # y_i - x, the change of the model (structure of the params)
    delta_control: Params  # c_i+ - c_i, the change of the client's control variate


def scaffold(*, lr: float | None = None) -> Algorithm:
    """SCAFFOLD; a client's control variate is its mean raw local gradient (option II's value).

    With server model ``x``, server control ``c`` and client control ``c_i`` (zeros before
    round 0), a sampled client starts at ``y_0 = x`` and takes ``K = local_steps`` steps::

        g_k = g_i(y_k)                                # the raw minibatch gradient
        y_{k+1} = local optimizer step along g_k - c_i + c
        c_i+ = (1/K) sum_k g_k                        # the mean raw local gradient
        sends (y_K - x, c_i+ - c_i)

    and the server, with ``p`` = participation (sampled / all clients)::

        x <- server optimizer step along -mean(y - x)     # sgd(1): x + mean(y - x)
        c <- c + p mean(c_i+ - c_i)

    Means are weighted by the clients' sample counts (the paper's uniform mean when the
    counts are equal).

    Under SGD local steps (the paper's setting) this is exactly option II: there
    ``y_{k+1} = y_k - lr (g_k - c_i + c)``, so ``(x - y_K) / (K lr) = (1/K) sum_k g_k - c_i
    + c`` and option II's ``c_i+ = c_i - c + (x - y_K) / (K lr)`` equals ``(1/K) sum_k g_k``.
    With another local optimizer ``(x - y_K) / (K lr)`` is no gradient: Adam moves each
    coordinate by about ``lr`` per step whatever the gradient's size, so option II's control
    variates would be O(1) per coordinate and swamp the gradients. The mean raw gradient,
    summed during the local steps, is the same gradient estimate under any local optimizer.

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
        grad_sum = jax.tree.map(
            lambda p: jnp.zeros(p.shape, jnp.promote_types(p.dtype, jnp.float32)), b.params
        )
        return ScaffoldCarry(start_model(ctx, b.params, ctx.hp["lr"]), grad_sum)

    def client_step(ctx, carry, model_state, batches, t, b, client_state):
        del t
        loss, grads, model_state = loss_and_grad(ctx, carry.params, model_state, batches[0])
        corrected = jax.tree.map(
            lambda g, ci, c: g - ci + c, grads, client_state.control, b.control
        )
        grad_sum = jax.tree.map(lambda s, g: s + g.astype(s.dtype), carry.grad_sum, grads)
        model = step_model(ctx, carry.model, corrected, ctx.hp["lr"])
        return ScaffoldCarry(model, grad_sum), model_state, loss

    def client_final(ctx, carry, b, client_state):
        # every client takes exactly ctx.local_steps steps (the engine masks no steps)
        inv_k = 1.0 / ctx.local_steps
        control = jax.tree.map(
            lambda ci, s: (s * inv_k).astype(ci.dtype), client_state.control, carry.grad_sum
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

    options: dict[str, Any] = {"control_variates": "mean raw local gradient (option II under SGD)"}
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
