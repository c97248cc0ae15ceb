"""A tiny federation driver for algorithm unit tests, independent of the engine.

It runs the round the base module's docstring describes, client by client in a Python loop,
with full-batch data (every local step sees the client's whole data set), sample-count
weighted means and a :class:`Context` built here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from pppml_jax.algorithms.base import Algorithm, Context

RUN_VALUES = {"lr": 0.1, "alpha": 0.05, "beta": 0.1}


def stateless(loss):
    """``loss(params, batch)`` as the engine's ``loss(params, model_state, batch)``."""

    def wrapped(params, model_state, batch):
        return loss(params, batch), model_state

    return wrapped


def make_context(
    algorithm: Algorithm,
    loss_fn,
    *,
    local_steps: int,
    participation: float = 1.0,
    server_lr: float = 1.0,
    local_optimizer=optax.sgd,
    server_optimizer=optax.sgd,
    **run_values: float,
) -> Context:
    """A Context whose ``hp`` holds the algorithm's hparams, None filled from ``run_values``."""
    values = {**RUN_VALUES, **run_values}
    hp = {}
    for name, value in algorithm.hparams.items():
        hp[name] = jnp.float32(values[name] if value is None else value)
    hp.setdefault("alpha", jnp.float32(values["alpha"]))
    hp["server_lr"] = jnp.float32(server_lr)
    return Context(loss_fn, hp, local_steps, participation, local_optimizer, server_optimizer)


def weighted_mean(messages: Sequence[Any], weights: Sequence[float]) -> Any:
    """``sum_i n_i m_i / sum_i n_i`` leaf by leaf (None leaves stay None; all-None -> None)."""
    total = float(sum(weights))
    if all(m is None for m in messages):
        return None
    return jax.tree.map(
        lambda *xs: sum(w * x for w, x in zip(weights, xs, strict=True)) / total, *messages
    )


class Driver:
    """Runs rounds of ``algorithm`` over ``clients`` (one full batch each), jitted per round."""

    def __init__(self, algorithm, ctx, clients, weights=None, model_state=None):
        self.alg, self.ctx, self.clients = algorithm, ctx, list(clients)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.clients)
        self.model_state = model_state
        self._round = jax.jit(self._round_fn, static_argnums=(4,))

    def init(self, params):
        alg, ctx = self.alg, self.ctx
        clients = [alg.init_client(ctx, params) for _ in self.clients]
        model_states = [self.model_state for _ in self.clients]
        return params, alg.init_server(ctx, params), clients, model_states

    def client_round(self, params, server_state, client_state, model_state, i):
        """One client's local training: ``(message, client_state, model_state, carries)``."""
        alg, ctx = self.alg, self.ctx
        b = alg.broadcast(ctx, params, server_state)
        carry = alg.client_init(ctx, b, client_state)
        carries = [carry]
        batches = (self.clients[i],) * alg.batches_per_step
        for t in range(ctx.local_steps):
            carry, model_state, _ = alg.client_step(
                ctx, carry, model_state, batches, jnp.int32(t), b, client_state
            )
            carries.append(carry)
        message, client_state = alg.client_final(ctx, carry, b, client_state)
        return message, client_state, model_state, carries

    def _round_fn(self, params, server_state, client_states, model_states, sampled):
        messages, client_states, model_states = [], list(client_states), list(model_states)
        for i in sampled:
            message, client_states[i], model_states[i], _ = self.client_round(
                params, server_state, client_states[i], model_states[i], i
            )
            messages.append(message)
        mean = weighted_mean(messages, [self.weights[i] for i in sampled])
        params, server_state = self.alg.server_update(self.ctx, params, server_state, mean)
        return params, server_state, client_states, model_states

    def round(self, state, sampled=None):
        sampled = tuple(range(len(self.clients))) if sampled is None else tuple(sampled)
        return self._round(*state, sampled)

    def run(self, params, rounds):
        state = self.init(params)
        for _ in range(rounds):
            state = self.round(state)
        return state


def max_abs_diff(a, b) -> float:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    return max((float(jnp.max(jnp.abs(x - y))) for x, y in zip(la, lb, strict=True)), default=0.0)
