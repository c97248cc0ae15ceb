"""Partial sharing: FedBN, FedPer and FedRep keep part of the model on each client.

The personal parameters are chosen by a path predicate (see
:mod:`pppml_jax.algorithms.partition`); they live in the client's persistent state, are never
sent (the message holds None for them, so nothing of them goes around the secure ring) and
the server leaves its copy of them unchanged. The personalized model of client ``i`` is the
server's shared parameters with client ``i``'s personal ones.

References:
  Li, Jiang, Zhang, Kamp, Dou, "FedBN: Federated Learning on Non-IID Features via Local Batch
  Normalization", ICLR 2021, https://arxiv.org/abs/2102.07623
  Arivazhagan, Aggarwal, Singh, Choudhary, "Federated Learning with Personalization Layers",
  2019, https://arxiv.org/abs/1912.00818 (FedPer).
  Collins, Hassani, Mokhtari, Shakkottai, "Exploiting Shared Representations for Personalized
  Federated Learning", ICML 2021, https://arxiv.org/abs/2102.07078 (FedRep).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
from jax import lax

from pppml_jax.algorithms.base import (
    Algorithm,
    Context,
    ModelCarry,
    init_server_optimizer,
    model_delta,
    server_mean_delta,
    start_model,
    step_model,
)
from pppml_jax.algorithms.partition import (
    PathSpec,
    Predicate,
    describe,
    last_top_level,
    merge,
    path_predicate,
    split,
)
from pppml_jax.algorithms.standard import check_positive, gradient_direction
from pppml_jax.typing import Params

NORM_PATHS: tuple[str, ...] = ("BatchNorm", "norm", "Norm")
"""FedBN's default personal parameters: the paths containing any of these."""


class PersonalParams(NamedTuple):
    """A client's persistent state: its own values of the personal parameters."""

    params: Params  # the params' structure: arrays at personal leaves, None at shared ones


class RepCarry(NamedTuple):
    """FedRep's training state: body and head are optimised separately."""

    body: ModelCarry  # shared parameters (None at the head) and their optimizer state
    head: ModelCarry  # head parameters (None elsewhere) and their optimizer state


def _chooser(spec: PathSpec | None, argument: str) -> Callable[[Params], Predicate]:
    """``params -> predicate``; None picks the top-level key that sorts last (the head)."""
    if spec is None:
        return lambda params: last_top_level(params, argument=argument)
    predicate = path_predicate(spec, argument=argument)
    return lambda params: predicate


def _partial_common(choose: Callable[[Params], Predicate]) -> dict:
    """The Algorithm fields FedBN, FedPer and FedRep share (all but the local training)."""

    def init_client(ctx: Context, params: Params) -> PersonalParams:
        del ctx
        return PersonalParams(split(params, choose(params))[1])

    def personal_model(ctx: Context, params: Params, client_state: PersonalParams) -> Params:
        del ctx
        return merge(split(params, choose(params))[0], client_state.params)

    return dict(
        server_update=server_mean_delta,
        init_server=init_server_optimizer,
        init_client=init_client,
        personal_model=personal_model,
        fine_tune=False,
    )


def _joint(name: str, spec: PathSpec | None, argument: str, lr: float | None) -> Algorithm:
    """Train shared and personal parameters jointly, send the shared parameters' delta."""
    check_positive("lr", lr)
    choose = _chooser(spec, argument)

    def client_init(ctx, broadcast, client_state):
        shared = split(broadcast, choose(broadcast))[0]
        return start_model(ctx, merge(shared, client_state.params), ctx.hp["lr"])

    def client_step(ctx, carry, model_state, batches, t, broadcast, client_state):
        d, model_state, loss = gradient_direction(
            ctx, carry.params, model_state, batches, t, broadcast, client_state
        )
        return step_model(ctx, carry, d, ctx.hp["lr"]), model_state, loss

    def client_final(ctx, carry, broadcast, client_state):
        del ctx, client_state
        predicate = choose(broadcast)
        shared, personal = split(carry.params, predicate)
        return model_delta(shared, split(broadcast, predicate)[0]), PersonalParams(personal)

    return Algorithm(
        name=name,
        client_init=client_init,
        client_step=client_step,
        client_final=client_final,
        hparams={"lr": lr},
        options={argument: describe(spec)},
        **_partial_common(choose),
    )


def fedbn(*, personal: PathSpec = NORM_PATHS, lr: float | None = None) -> Algorithm:
    """FedBN: FedAvg that keeps every client's normalisation layers local.

    The parameters whose path matches ``personal`` (by default every path containing
    "BatchNorm", "norm" or "Norm": BatchNorm's scale and bias) are trained with the rest but
    stay in the client's state and are never sent; everything else is averaged as in FedAvg.
    BatchNorm's running statistics are model state, which the engine keeps per client with
    its default ``model_state_mode="local"`` (FedBN's local statistics). The personalized
    model is the server's shared parameters with the client's own normalisation parameters.

    Args:
      personal: which parameters stay local: a path substring, a list of them or a callable
        ``path -> bool`` (paths like ``"BatchNorm_0/scale"``).
      lr: the local step size (None: the run's ``lr``).

    References:
      Li et al., ICLR 2021, https://arxiv.org/abs/2102.07623

    Example:
      >>> alg = pj.algorithms.fedbn()                       # BatchNorm/LayerNorm params local
      >>> alg = pj.algorithms.fedbn(personal="BatchNorm")   # BatchNorm only
    """
    return _joint("fedbn", personal, "personal", lr)


def fedper(*, head: PathSpec | None = None, lr: float | None = None) -> Algorithm:
    """FedPer: body and personal head trained jointly; only the body is averaged.

    Args:
      head: the personal head's parameters: a path substring, a list of them or a callable
        ``path -> bool``. None: the top-level key of the params mapping that sorts last,
        digit runs compared as numbers (:func:`~pppml_jax.algorithms.partition.last_top_level`):
        the last Dense layer of a Flax model with auto-named submodules (``"Dense_1"`` after
        ``"Dense_0"`` and ``"BatchNorm_0"``). Name it when that is not the head.
      lr: the local step size (None: the run's ``lr``).

    References:
      Arivazhagan et al. 2019, https://arxiv.org/abs/1912.00818

    Example:
      >>> alg = pj.algorithms.fedper(head="Dense_2")
    """
    return _joint("fedper", head, "head", lr)


def fedrep(
    *, head: PathSpec | None = None, head_steps: int | None = None, lr: float | None = None
) -> Algorithm:
    """FedRep: each round first fits the personal head with the body frozen, then the body.

    Local steps ``t < head_steps`` update only the head (starting from the client's own
    head), the remaining ``local_steps - head_steps`` steps only the body (starting from the
    server's body, head fixed); the body's delta is sent, the head stays on the client. Head
    and body each have their own local optimizer state.

    Args:
      head: the personal head, as in :func:`fedper` (None: the top-level key that sorts last).
      head_steps: local steps on the head per round (>= 0). None: all but the last local step
        (the paper fits the head for many epochs and the body for one). With
        ``head_steps >= local_steps`` the body is never trained.
      lr: the local step size of head and body (None: the run's ``lr``).

    References:
      Collins et al., ICML 2021, https://arxiv.org/abs/2102.07078

    Example:
      >>> alg = pj.algorithms.fedrep(head="Dense_1", head_steps=4)  # with local_steps=5
    """
    check_positive("lr", lr)
    if head_steps is not None and (
        isinstance(head_steps, bool) or not isinstance(head_steps, int) or head_steps < 0
    ):
        raise ValueError(f"head_steps={head_steps!r} must be an int >= 0 or None")
    choose = _chooser(head, "head")

    def n_head(ctx: Context) -> int:
        return max(ctx.local_steps - 1, 0) if head_steps is None else head_steps

    def client_init(ctx, broadcast, client_state):
        body = split(broadcast, choose(broadcast))[0]
        lr_ = ctx.hp["lr"]
        return RepCarry(start_model(ctx, body, lr_), start_model(ctx, client_state.params, lr_))

    def client_step(ctx, carry, model_state, batches, t, broadcast, client_state):
        del broadcast, client_state
        batch = batches[0]

        def train_head(_):
            def loss(head):
                return ctx.loss_fn(merge(carry.body.params, head), model_state, batch)

            (value, state), g = jax.value_and_grad(loss, has_aux=True)(carry.head.params)
            return carry._replace(head=step_model(ctx, carry.head, g, ctx.hp["lr"])), state, value

        def train_body(_):
            def loss(body):
                return ctx.loss_fn(merge(body, carry.head.params), model_state, batch)

            (value, state), g = jax.value_and_grad(loss, has_aux=True)(carry.body.params)
            return carry._replace(body=step_model(ctx, carry.body, g, ctx.hp["lr"])), state, value

        return lax.cond(t < n_head(ctx), train_head, train_body, None)

    def client_final(ctx, carry, broadcast, client_state):
        del ctx, client_state
        body = split(broadcast, choose(broadcast))[0]
        return model_delta(carry.body.params, body), PersonalParams(carry.head.params)

    return Algorithm(
        name="fedrep",
        client_init=client_init,
        client_step=client_step,
        client_final=client_final,
        hparams={"lr": lr},
        options={"head": describe(head), "head_steps": head_steps},
        **_partial_common(choose),
    )
