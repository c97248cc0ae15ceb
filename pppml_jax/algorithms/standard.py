"""Local training, FedAvg and FedProx as :class:`~pppml_jax.algorithms.base.Algorithm` values.

References:
  McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
  Data", AISTATS 2017, https://arxiv.org/abs/1602.05629 (FedAvg).
  Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020,
  https://arxiv.org/abs/1812.06127 (FedProx).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from pppml_jax.algorithms.base import (
    Algorithm,
    Context,
    init_server_optimizer,
    loss_and_grad,
    model_delta,
    server_mean_delta,
    start_model,
    step_model,
)
from pppml_jax.typing import ModelState, Params

Direction = Callable[..., tuple[Params, ModelState, jax.Array]]
"""``(ctx, params, model_state, batches, t, broadcast, client_state) ->
(direction, new_model_state, loss)``: what the local optimizer steps along."""


def check_positive(name: str, value: float | None, *, allow_none: bool = True) -> None:
    """Raises ``ValueError`` naming ``name`` unless ``value`` is a number > 0 (or None)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}={value!r} must be a number > 0")


def gradient_direction(ctx: Context, params, model_state, batches, t, broadcast, client_state):
    """The plain gradient of the loss on the step's batch (FedAvg's local step)."""
    del t, broadcast, client_state
    loss, grads, new_state = loss_and_grad(ctx, params, model_state, batches[0])
    return grads, new_state, loss


def one_model(
    name: str,
    direction: Direction,
    *,
    step_size: str = "lr",
    hparams: dict[str, float | None],
    **fields: Any,
) -> Algorithm:
    """An algorithm that trains the broadcast model locally and sends its delta (FedAvg-like).

    Args:
      name: the algorithm's name.
      direction: what each local step's optimizer steps along (see :data:`Direction`).
      step_size: the name of the hyper-parameter the local optimizer is built with.
      hparams: the algorithm's float hyper-parameters (``Algorithm.hparams``).
      **fields: any other :class:`Algorithm` field (``batches_per_step``, ``options``, ...).
    """

    def client_init(ctx, broadcast, client_state):
        del client_state
        return start_model(ctx, broadcast, ctx.hp[step_size])

    def client_step(ctx, carry, model_state, batches, t, broadcast, client_state):
        d, model_state, loss = direction(
            ctx, carry.params, model_state, batches, t, broadcast, client_state
        )
        return step_model(ctx, carry, d, ctx.hp[step_size]), model_state, loss

    def client_final(ctx, carry, broadcast, client_state):
        del ctx
        return model_delta(carry.params, broadcast), client_state

    return Algorithm(
        name=name,
        client_init=client_init,
        client_step=client_step,
        client_final=client_final,
        server_update=server_mean_delta,
        init_server=init_server_optimizer,
        hparams=hparams,
        **fields,
    )


def fedavg(*, lr: float | None = None) -> Algorithm:
    """FedAvg: ``local_steps`` optimizer steps on the client's data, the server averages.

    The local optimizer ("sgd", "adam" or the run's optax transformation) has step size
    ``lr``; the server steps along the sample-weighted mean of the clients' deltas with the
    server optimizer (``optax.sgd(server_lr)``; server_lr 1 gives the weighted mean model).

    Args:
      lr: the local step size (None: the run's ``lr``).

    Example:
      >>> hist = pj.federation.run(loss, params, clients, algorithm=pj.algorithms.fedavg(lr=0.1))
    """
    check_positive("lr", lr)
    return one_model("fedavg", gradient_direction, hparams={"lr": lr})


def fedprox(*, mu: float, lr: float | None = None) -> Algorithm:
    """FedProx: FedAvg whose local objective adds ``mu/2 ||w - w_global||^2``.

    Each local step follows ``grad f_i(w) + mu (w - w_global)``; ``mu = 0`` is FedAvg exactly.

    Args:
      mu: the proximal weight (>= 0).
      lr: the local step size (None: the run's ``lr``).
    """
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or mu < 0:
        raise ValueError(f"mu={mu!r} must be a number >= 0")
    check_positive("lr", lr)

    def direction(ctx, params, model_state, batches, t, broadcast, client_state):
        grads, new_state, loss = gradient_direction(
            ctx, params, model_state, batches, t, broadcast, client_state
        )
        mu_ = ctx.hp["mu"]
        grads = jax.tree.map(lambda g, w, w0: g + mu_ * (w - w0), grads, params, broadcast)
        return grads, new_state, loss

    return one_model("fedprox", direction, hparams={"lr": lr, "mu": float(mu)})


class PersonalModel(NamedTuple):
    """A client's persistent state that is a whole model of its own."""

    params: Params  # the client's own model, the structure of the global model


def local(*, lr: float | None = None) -> Algorithm:
    """Local training: every client trains its own model on its own data; nothing is sent.

    Each client starts from the initial global model and keeps its model between rounds;
    the server model never changes. Both evaluations score the client's own model.

    Args:
      lr: the local step size (None: the run's ``lr``).
    """
    check_positive("lr", lr)

    def init_client(ctx, params):
        del ctx
        return PersonalModel(params)

    def client_init(ctx, broadcast, client_state):
        del broadcast
        return start_model(ctx, client_state.params, ctx.hp["lr"])

    def client_step(ctx, carry, model_state, batches, t, broadcast, client_state):
        d, model_state, loss = gradient_direction(
            ctx, carry.params, model_state, batches, t, broadcast, client_state
        )
        return step_model(ctx, carry, d, ctx.hp["lr"]), model_state, loss

    def client_final(ctx, carry, broadcast, client_state):
        del ctx, broadcast, client_state
        return None, PersonalModel(carry.params)

    def own(ctx, params, client_state):
        del ctx, params
        return client_state.params

    def server_update(ctx, params, server_state, mean):
        del ctx, mean
        return params, server_state

    return Algorithm(
        name="local",
        client_init=client_init,
        client_step=client_step,
        client_final=client_final,
        server_update=server_update,
        init_server=lambda ctx, params: (),
        init_client=init_client,
        global_model=own,
        personal_model=own,
        fine_tune=False,
        hparams={"lr": lr},
    )
