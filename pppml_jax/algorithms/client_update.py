"""One client's local training as a pure function, for research code outside the engine.

A *local rule* says how one step turns batches into an update direction (SGD's gradient,
Per-FedAvg's meta-gradient); :func:`make_client_update` turns a rule, an optax optimizer and
the number of local steps into one pure function of one client's data. It runs exactly the
loop the federation engine runs (:mod:`pppml_jax.algorithms.local_training`), on the
algorithm :func:`rule_algorithm` builds from the rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from pppml_jax.algorithms.base import Algorithm, Context
from pppml_jax.algorithms.local_training import (
    ClientCarry,
    draw_batch,
    local_step,
    run_steps,
    start_client,
)
from pppml_jax.algorithms.meta_gradient import Variant, check_variant, meta_direction
from pppml_jax.algorithms.standard import one_model
from pppml_jax.typing import Batch, ModelState, Params, PRNGKey, StatefulLossFn

__all__ = [
    "ClientCarry",
    "ClientProgram",
    "ClientResult",
    "LocalRule",
    "draw_batch",
    "make_client_program",
    "make_client_update",
    "perfedavg_rule",
    "rule_algorithm",
    "sgd_rule",
]

DirectionFn = Callable[
    [StatefulLossFn, Params, ModelState, tuple[Batch, ...]],
    tuple[Params, ModelState, jax.Array],
]


class LocalRule(NamedTuple):
    """How one local step turns batches into an update direction.

    Attributes:
      name: a short name ("sgd", "perfedavg-fo", ...).
      batches_per_step: how many independent batches one step draws (1 for SGD; 2 for
        first-order Per-FedAvg: D, D'; 3 for the hf and exact variants: D, D', D'').
      direction: ``(loss_fn, params, model_state, batches) -> (direction, new_state, loss)``;
        the optimizer then steps along ``direction`` as if it were a gradient.
    """

    name: str
    batches_per_step: int
    direction: DirectionFn


def sgd_rule() -> LocalRule:
    """The plain gradient of the loss on one batch (FedAvg's and local training's rule)."""

    def direction(loss_fn, params, model_state, batches):
        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, model_state, batches[0]
        )
        return grads, new_state, loss

    return LocalRule("sgd", 1, direction)


def perfedavg_rule(*, alpha: float, variant: Variant = "fo", delta: float = 1e-3) -> LocalRule:
    """Per-FedAvg's meta-gradient (docs/method.md) as a local rule.

    With ``optax.sgd(beta)`` as the local optimizer, one step equals
    :func:`pppml_jax.perfedavg_step` with the same batches.
    """
    check_variant(variant)
    if alpha <= 0:
        raise ValueError(f"alpha={alpha} must be > 0 for Per-FedAvg")

    def direction(loss_fn, params, model_state, batches):
        return meta_direction(
            loss_fn, params, model_state, batches, alpha=alpha, variant=variant, delta=delta
        )

    return LocalRule(f"perfedavg-{variant}", 2 if variant == "fo" else 3, direction)


def rule_algorithm(rule: LocalRule) -> Algorithm:
    """A FedAvg-style :class:`Algorithm` whose local steps follow ``rule``."""

    def direction(ctx, params, model_state, batches, t, broadcast, client_state):
        del t, broadcast, client_state
        return rule.direction(ctx.loss_fn, params, model_state, batches)

    return one_model(
        rule.name, direction, hparams={"lr": None}, batches_per_step=rule.batches_per_step
    )


class ClientResult(NamedTuple):
    """What one client's local training returns."""

    params: Params  # the client's model after tau local steps, same structure as the input
    model_state: ModelState  # the model state after training (None for stateless models)
    loss: jax.Array  # [] float32, mean training loss over the local steps


class ClientProgram(NamedTuple):
    """Local training as FedJAX-style pure init / step / finalize functions.

    ``init(params, model_state) -> carry``; ``step(carry, data, num_examples, key, t) -> carry``
    takes local step ``t`` (its batches come from ``fold_in(key, t)``, ``t`` may be traced);
    ``finalize(carry) -> ClientResult``.
    """

    init: Callable[[Params, ModelState], ClientCarry]
    step: Callable[[ClientCarry, Batch, jax.Array, PRNGKey, jax.Array | int], ClientCarry]
    finalize: Callable[[ClientCarry], ClientResult]
    local_steps: int


ClientUpdateFn = Callable[[Params, ModelState, Batch, jax.Array, PRNGKey], ClientResult]


def make_client_program(
    loss_fn: StatefulLossFn,
    rule: LocalRule,
    optimizer: optax.GradientTransformation,
    *,
    local_steps: int,
    batch_size: int,
    batch_rng: str | None = None,
) -> ClientProgram:
    """The init / step / finalize functions of :func:`make_client_update` (same arguments)."""
    if local_steps < 1:
        raise ValueError(f"local_steps={local_steps} must be >= 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    algorithm = rule_algorithm(rule)
    ctx = Context(
        loss_fn=loss_fn,
        hp={"lr": jnp.ones((), jnp.float32)},
        local_steps=local_steps,
        participation=1.0,
        local_optimizer=lambda step_size: optimizer,
        server_optimizer=optax.sgd,
    )

    def init(params, model_state) -> ClientCarry:
        return start_client(algorithm, ctx, params, None, model_state)

    def step(carry: ClientCarry, data, num_examples, key, t) -> ClientCarry:
        # FedAvg-style steps read nothing of the broadcast but the starting point, already in
        # the carry, so no broadcast is needed here.
        return local_step(
            algorithm,
            ctx,
            carry,
            data,
            num_examples,
            key,
            t,
            None,
            None,
            batch_size=batch_size,
            batch_rng=batch_rng,
        )

    def finalize(carry: ClientCarry) -> ClientResult:
        return ClientResult(carry.algorithm.params, carry.model_state, carry.loss_sum / local_steps)

    return ClientProgram(init, step, finalize, local_steps)


def make_client_update(
    loss_fn: StatefulLossFn,
    rule: LocalRule,
    optimizer: optax.GradientTransformation,
    *,
    local_steps: int,
    batch_size: int,
    unroll: bool = True,
    batch_rng: str | None = None,
) -> ClientUpdateFn:
    """Builds ``client_update(params, model_state, data, num_examples, key) -> ClientResult``.

    The returned function is pure: it initialises the local optimizer from ``params`` (local
    optimizer state does not persist between rounds), then takes ``local_steps`` steps; step
    ``t`` draws ``rule.batches_per_step`` independent batches of ``batch_size`` real examples
    from ``fold_in(key, t)``.

    Args:
      loss_fn: ``loss_fn(params, model_state, batch) -> (scalar, new_model_state)``.
      rule: the local rule (:func:`sgd_rule`, :func:`perfedavg_rule`).
      optimizer: the local optax optimizer; ``optax.sgd(lr)`` for FedAvg, ``optax.sgd(beta)``
        for Per-FedAvg as published.
      local_steps: tau, the number of local steps (>= 1).
      batch_size: examples per batch (>= 1).
      unroll: unroll the steps in the compiled program (fast for convolutions on XLA:CPU, where a
        rolled ``lax.scan`` runs about 15x slower, jax-ml/jax#12868) or keep a rolled loop
        (smaller programs, faster compiles for many steps).
      batch_rng: the name of an entry added to every batch, holding a fresh PRNG key's data
        (for dropout); None: no entry.

    Returns:
      ``client_update``; its ``data`` is a pytree of ``[N, ...]`` arrays padded to a common
      ``N`` and ``num_examples`` a scalar int: rows ``>= num_examples`` are never read.
    """
    program = make_client_program(
        loss_fn,
        rule,
        optimizer,
        local_steps=local_steps,
        batch_size=batch_size,
        batch_rng=batch_rng,
    )

    def client_update(params, model_state, data, num_examples, key) -> ClientResult:
        carry = program.init(params, model_state)
        carry = run_steps(
            lambda t, c: program.step(c, data, num_examples, key, t),
            carry,
            local_steps,
            unroll=unroll,
        )
        return program.finalize(carry)

    return client_update
