"""A client's local training: tau optax steps along a local rule (SGD or Per-FedAvg).

The pieces follow optax and FedJAX: a *local rule* says how one step turns batches into an
update direction; :func:`make_client_update` turns a rule, an optax optimizer and the number of
local steps into one pure function of one client's data, which the federation engine batches
over clients with ``jax.vmap`` (or loops over, on CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from pppml_jax.algorithms.batching import sample_batch
from pppml_jax.algorithms.perfedavg import Variant, check_variant, meta_gradient_stateful
from pppml_jax.typing import Batch, ModelState, Params, PRNGKey, StatefulLossFn

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
    """Per-FedAvg's meta-gradient (REFERENCE.md 1.1) as a local rule.

    With ``optax.sgd(beta)`` as the local optimizer, one step equals
    :func:`pppml_jax.perfedavg_step` with the same batches.
    """
    check_variant(variant)
    if alpha <= 0:
        raise ValueError(f"alpha={alpha} must be > 0 for Per-FedAvg")

    def direction(loss_fn, params, model_state, batches):
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

    return LocalRule(f"perfedavg-{variant}", 2 if variant == "fo" else 3, direction)


def draw_batch(key, data, num_examples, batch_size: int, batch_rng: str | None = None):
    """:func:`sample_batch`, plus a fresh key's data under ``batch_rng`` when that is set."""
    batch = sample_batch(key, data, num_examples, batch_size)
    if batch_rng is None:
        return batch
    if not isinstance(batch, dict):
        raise ValueError(f"batch_rng={batch_rng!r} needs dict batches, got {type(batch).__name__}")
    return {**batch, batch_rng: jax.random.key_data(jax.random.fold_in(key, 0x5EED))}


class ClientResult(NamedTuple):
    """What one client's local training returns."""

    params: Params  # the client's model after tau local steps, same structure as the input
    model_state: ModelState  # the model state after training (None for stateless models)
    loss: jax.Array  # [] float32, mean training loss over the local steps


class ClientCarry(NamedTuple):
    """A client's training state between local steps."""

    params: Params  # the model being trained
    model_state: ModelState  # its state (None for stateless models)
    opt_state: optax.OptState  # the local optimizer's state
    loss_sum: jax.Array  # [] float32, sum of the step losses so far


class ClientProgram(NamedTuple):
    """Local training as FedJAX-style pure init / step / finalize functions.

    ``init(params, model_state) -> carry``; ``step(carry, data, num_examples, key, t) -> carry``
    takes local step ``t`` (its batches come from ``fold_in(key, t)``, ``t`` may be traced);
    ``finalize(carry) -> ClientResult``. Running them in a Python loop over steps lets the
    engine compile one small step program instead of all tau steps unrolled (whose compile
    time grows faster than tau on XLA:CPU).
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
    """The init / step / finalize functions of :func:`make_client_update` (same arguments).

    ``batch_rng``: when set, every batch drawn (a dict) gets this extra entry holding a fresh
    PRNG key's data (``[2]`` uint32; ``jax.random.wrap_key_data`` turns it back into a key),
    for losses that need randomness, such as dropout.
    """
    if local_steps < 1:
        raise ValueError(f"local_steps={local_steps} must be >= 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")

    def init(params, model_state) -> ClientCarry:
        return ClientCarry(params, model_state, optimizer.init(params), jnp.zeros((), jnp.float32))

    def step(carry: ClientCarry, data, num_examples, key, t) -> ClientCarry:
        keys = jax.random.split(jax.random.fold_in(key, t), rule.batches_per_step)
        batches = tuple(
            draw_batch(keys[j], data, num_examples, batch_size, batch_rng)
            for j in range(rule.batches_per_step)
        )
        direction, model_state, loss = rule.direction(
            loss_fn, carry.params, carry.model_state, batches
        )
        updates, opt_state = optimizer.update(direction, carry.opt_state, carry.params)
        params = optax.apply_updates(carry.params, updates)
        return ClientCarry(params, model_state, opt_state, carry.loss_sum + loss)

    def finalize(carry: ClientCarry) -> ClientResult:
        return ClientResult(carry.params, carry.model_state, carry.loss_sum / local_steps)

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
        rolled ``lax.scan`` runs about 15x slower, jax-ml/jax#12868) or keep a rolled
        ``lax.scan`` (smaller programs, faster compiles for many steps).
      batch_rng: see :func:`make_client_program`.

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
        if unroll:
            for t in range(local_steps):
                carry = program.step(carry, data, num_examples, key, t)
        else:
            carry = jax.lax.fori_loop(
                0,
                local_steps,
                lambda t, c: program.step(c, data, num_examples, key, t),
                carry,
            )
        return program.finalize(carry)

    return client_update
