"""The public algorithm type: a federated algorithm is a value, a NamedTuple of pure functions.

In the style of optax's ``GradientTransformation`` and FedJAX's ``FederatedAlgorithm``, an
:class:`Algorithm` says what the server keeps and broadcasts, what a client keeps between
rounds, what one local step does, what a client sends back, how the server folds the
clients' mean message into its model, and which model a client evaluates. The federation
engine (vmap or loop over clients, chunks, device mesh, host-resident client state, the secure
ring, checkpoints, evaluation) is generic over it and never tests an algorithm's name.

Every function receives a :class:`Context` first. Its ``hp`` holds the float hyper-parameters
as ``[]`` float32 arrays that the engine passes to its compiled programs as arguments, so a
run with another learning rate reuses the compiled programs.

One round, for each sampled client ``i`` with data ``D_i`` (everything below is jitted and
vmapped or looped over clients by the engine)::

    b      = broadcast(ctx, params, server_state)
    carry  = client_init(ctx, b, client_state_i)
    for t in range(local_steps):                     # batches_per_step batches of D_i each
        carry, model_state_i, loss = client_step(ctx, carry, model_state_i, batches, t, b,
                                                 client_state_i)
    message_i, client_state_i = client_final(ctx, carry, b, client_state_i)
    mean = sum_i n_i message_i / sum_i n_i           # through the secure ring if asked
    params, server_state = server_update(ctx, params, server_state, mean)

A message may hold ``None`` leaves (nothing sent for them, e.g. a personal head), and an
algorithm that sends nothing returns ``None`` (then ``server_update`` gets ``mean=None``).

Evaluation: ``global_model(ctx, params, client_state_i)`` is scored as "global" and
``personal_model(...)`` as "personalized", after ``personalize_steps`` SGD steps of size
``hp["alpha"]`` on the client's training data when ``fine_tune`` is True.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from pppml_jax.typing import Batch, ModelState, Params, StatefulLossFn

OptimizerFactory = Callable[[jax.Array], optax.GradientTransformation]
"""``step_size -> optax transformation`` (a user's own transformation ignores the step size)."""

ENGINE_HPARAMS: tuple[str, ...] = ("alpha", "server_lr")
"""Hyper-parameters every context holds: the personalization step and the server step size."""


class Context(NamedTuple):
    """What an algorithm's functions may use; the engine builds it inside its programs.

    Attributes:
      loss_fn: ``loss_fn(params, model_state, batch) -> (scalar, new_model_state)``; stateless
        models get ``model_state=None`` passed through.
      hp: float hyper-parameters by name, each a ``[]`` float32 array (possibly traced): the
        algorithm's own (``Algorithm.hparams``) plus ``alpha`` and ``server_lr``.
      local_steps: tau, the number of local steps per round (static).
      participation: sampled clients per round divided by all clients, in (0, 1] (static).
      local_optimizer: builds the local optax optimizer for a step size ("sgd", "adam" or the
        user's transformation used as given).
      server_optimizer: builds the server's optax optimizer for a step size.
    """

    loss_fn: StatefulLossFn
    hp: Mapping[str, jax.Array]
    local_steps: int
    participation: float
    local_optimizer: OptimizerFactory
    server_optimizer: OptimizerFactory


def shared_model(ctx: Context, params: Params, client_state: Any) -> Params:
    """The default ``global_model`` and ``personal_model``: the server's model as it is."""
    del ctx, client_state
    return params


def no_client_state(ctx: Context, params: Params) -> None:
    """The default ``init_client``: the algorithm keeps nothing on clients between rounds."""
    del ctx, params


def broadcast_params(ctx: Context, params: Params, server_state: Any) -> Params:
    """The default ``broadcast``: the server's model."""
    del ctx, server_state
    return params


class Algorithm(NamedTuple):
    """A federated algorithm as pure functions (see the module docstring for one round).

    Attributes:
      name: a short name ("fedavg", "ditto", ...); results are reported under it.
      client_init: ``(ctx, broadcast, client_state) -> carry``: a client's training state
        before its first local step.
      client_step: ``(ctx, carry, model_state, batches, t, broadcast, client_state) ->
        (carry, model_state, loss)``: local step ``t`` (an int32, possibly traced) on
        ``batches``, a tuple of ``batches_per_step`` independent batches; ``loss`` is a ``[]``
        float32 training loss for reporting.
      client_final: ``(ctx, carry, broadcast, client_state) -> (message, client_state)``: what
        the client sends (a pytree averaged by the server with sample-count weights, or None)
        and its persistent state for the next round.
      server_update: ``(ctx, params, server_state, mean) -> (params, server_state)``.
      init_server: ``(ctx, params) -> server_state`` (a pytree; e.g. the server optimizer's
        state, a control variate).
      init_client: ``(ctx, params) -> client_state``: one client's persistent state before
        round 0 (a pytree of arrays, or None). The engine keeps a row per client on the host.
      broadcast: ``(ctx, params, server_state) -> broadcast``: what every sampled client
        receives.
      global_model: ``(ctx, params, client_state) -> params`` evaluated as "global".
      personal_model: ``(ctx, params, client_state) -> params`` evaluated as "personalized".
      fine_tune: whether the personalized model first takes ``personalize_steps`` SGD steps of
        size ``hp["alpha"]`` on the client's training data (FedAvg + fine-tuning, Per-FedAvg).
      batches_per_step: independent batches each local step draws.
      hparams: float hyper-parameters and their values; None means "the run's value" (the
        engine fills ``lr`` from ``FederationConfig.lr`` and ``alpha``/``beta`` likewise).
      secure: secure-aggregation options used when the run gives none (``pppml``), else None.
      options: the factory's non-float options, for reports and fingerprints (JSON-able).
    """

    name: str
    client_init: Callable[..., Any]
    client_step: Callable[..., tuple[Any, ModelState, jax.Array]]
    client_final: Callable[..., tuple[Any, Any]]
    server_update: Callable[..., tuple[Params, Any]]
    init_server: Callable[[Context, Params], Any]
    init_client: Callable[[Context, Params], Any] = no_client_state
    broadcast: Callable[[Context, Params, Any], Any] = broadcast_params
    global_model: Callable[[Context, Params, Any], Params] = shared_model
    personal_model: Callable[[Context, Params, Any], Params] = shared_model
    fine_tune: bool = True
    batches_per_step: int = 1
    hparams: Mapping[str, float | None] = {}
    secure: Mapping[str, Any] | None = None
    options: Mapping[str, Any] = {}


# ------------------------------------------------------------------ pieces the built-ins share
class ModelCarry(NamedTuple):
    """The training state of an algorithm that trains one model locally."""

    params: Params  # the model being trained
    opt_state: optax.OptState  # the local optimizer's state (fresh every round)


def start_model(ctx: Context, params: Params, step_size: jax.Array) -> ModelCarry:
    """A :class:`ModelCarry` at ``params`` with a fresh local optimizer of ``step_size``."""
    return ModelCarry(params, ctx.local_optimizer(step_size).init(params))


def step_model(
    ctx: Context, carry: ModelCarry, direction: Params, step_size: jax.Array
) -> ModelCarry:
    """One step of the local optimizer along ``direction`` (used as a gradient)."""
    opt = ctx.local_optimizer(step_size)
    updates, opt_state = opt.update(direction, carry.opt_state, carry.params)
    return ModelCarry(optax.apply_updates(carry.params, updates), opt_state)


def loss_and_grad(
    ctx: Context, params: Params, model_state: ModelState, batch: Batch
) -> tuple[jax.Array, Params, ModelState]:
    """``(loss, grad, new_model_state)`` of ``ctx.loss_fn`` at ``params`` on ``batch``."""
    (loss, new_state), grads = jax.value_and_grad(ctx.loss_fn, has_aux=True)(
        params, model_state, batch
    )
    return loss, grads, new_state


def model_delta(new: Params, old: Params) -> Params:
    """``new - old`` leaf by leaf (None leaves stay None): what FedAvg-style clients send."""
    return jax.tree.map(jnp.subtract, new, old)


def init_server_optimizer(ctx: Context, params: Params) -> optax.OptState:
    """The ``init_server`` of algorithms whose server state is its optimizer's state."""
    return ctx.server_optimizer(ctx.hp["server_lr"]).init(params)


def apply_mean_delta(
    ctx: Context, params: Params, opt_state: optax.OptState, mean_delta: Params
) -> tuple[Params, optax.OptState]:
    """The server step along the pseudo-gradient ``-mean_delta = theta - mean_i theta_i``.

    With ``optax.sgd(1.0)`` the new model is exactly the weighted mean of the client models;
    other optax optimizers give FedAdam and friends (Reddi et al. 2021, arXiv 2003.00295).
    ``mean_delta`` may hold None leaves (not sent): those parameters are left unchanged.
    """
    full = jax.tree.map(
        lambda p, d: jnp.zeros_like(p) if d is None else d,
        params,
        mean_delta,
        is_leaf=lambda x: x is None,
    )
    pseudo_grad = jax.tree.map(jnp.negative, full)
    opt = ctx.server_optimizer(ctx.hp["server_lr"])
    updates, opt_state = opt.update(pseudo_grad, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def server_mean_delta(
    ctx: Context, params: Params, server_state: optax.OptState, mean: Params | None
) -> tuple[Params, optax.OptState]:
    """The ``server_update`` of FedAvg-style algorithms whose message is the model delta."""
    if mean is None:
        return params, server_state
    return apply_mean_delta(ctx, params, server_state, mean)
