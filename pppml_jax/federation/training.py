"""The compiled training programs of a round, generic over the :class:`Algorithm`.

Clients are trained in rows: a chunk of vmapped clients (``batched``) or one client (loop).
Every program takes the hyper-parameters ``hp`` as an argument, so runs that differ only in
them share the compiled code. Three granularities, same arithmetic:

- ``fused``: one program for the whole round (one chunk, vmap, no secure aggregation);
- ``whole``: one program per chunk (all local steps), updates summed into a ``Work``;
- step programs: ``init``, one ``step`` program called per local step, ``finish``; compile
  time of unrolled steps grows faster than their number on XLA:CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pppml_jax.algorithms.base import Algorithm, Context, model_delta
from pppml_jax.algorithms.local_training import local_step, run_steps, start_client
from pppml_jax.federation.types import ClientRows, Message, Shared


class Work(NamedTuple):
    """What the programs of one round accumulate (donated off the CPU; never the caller's state)."""

    total: Any  # Message of float32 sums: sum_i w_i * message_i
    weight: jax.Array  # [] float32: sum_i w_i
    loss: jax.Array  # [] float32: sum_i w_i * loss_i
    finite: jax.Array  # [] bool: every trained client's output is finite so far


def all_finite(tree: Any) -> jax.Array:
    """``[]`` bool: every element of every leaf is finite (per client when vmapped)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def take(tree: Any, index: Any) -> Any:
    """Rows ``index`` of every leaf; out-of-range rows (dummy clients) read the last row."""
    return jax.tree.map(lambda x: jnp.take(x, index, axis=0, mode="clip"), tree)


def broadcast_rows(tree: Any, count: int) -> Any:
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (count, *jnp.shape(x))), tree)


def zero_work(template: Message) -> Work:
    """An empty :class:`Work` for messages shaped like ``template`` (shape/dtype structs)."""
    total = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), template)
    # separate buffers: Work is donated, and one buffer cannot be donated twice
    return Work(total, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), jnp.ones((), bool))


def donate_work() -> tuple[str, ...]:
    """``("work",)`` where donating the round's sums is free, ``()`` on XLA:CPU.

    On the CPU a program whose donated input is still being computed by the previous client's
    program is not queued: the call waits for it, so the host's work for the next client (its
    chunk, the dispatch) cannot overlap the computation. Measured with the SmallCNN workload of
    ``benchmarks/client_throughput.py`` (32 clients): dispatching 32 client programs took 0.82 s
    with ``work`` donated (as long as running them) and 0.02 s without. On accelerators the
    call is queued on the stream either way, and donation saves a model-sized buffer per call.
    """
    return () if jax.default_backend() == "cpu" else ("work",)


class Trainer:
    """Builds and holds the jitted training programs of one federation.

    Args:
      algorithm: the algorithm.
      make_ctx: ``hp -> Context`` (called inside the programs).
      local_steps, batch_size, batch_rng, unroll: as in ``FederationConfig``.
      local_model_state: each client keeps its own model state (rows of the client store).
      averages_state: the model state is averaged like the parameters.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        make_ctx: Callable[[dict], Context],
        *,
        local_steps: int,
        batch_size: int,
        batch_rng: str | None,
        unroll: bool,
        local_model_state: bool,
        averages_state: bool,
    ):
        self.algorithm = algorithm
        self.make_ctx = make_ctx
        self.local_steps = local_steps
        self.batch_size = batch_size
        self.batch_rng = batch_rng
        self.unroll = unroll
        self.local_model_state = local_model_state
        self.averages_state = averages_state
        flags = ("gather", "batched", "collect")
        donate = donate_work()
        self.fused = jax.jit(self._fused, static_argnames=("gather",))
        self.whole = jax.jit(self._whole, static_argnames=flags, donate_argnames=donate)
        self.init = jax.jit(self._init, static_argnames=("batched",))
        # No donation of carries: a carry's params may be the caller's own buffer (forwarded)
        self.step = jax.jit(self._step, static_argnames=("gather", "batched"))
        self.finish = jax.jit(
            self._finish, static_argnames=("batched", "collect"), donate_argnames=donate
        )
        self.server = jax.jit(self._server)
        self._donate = donate
        self._t = None
        self._zeros: dict = {}

    def empty_work(self, template: Message) -> Work:
        """A zero :class:`Work` for messages like ``template``.

        Where ``work`` is not donated (the CPU) no program consumes it, so one copy per
        message layout is kept and reused: no zero-filling dispatches per round.
        """
        if self._donate:
            return zero_work(template)
        leaves, treedef = jax.tree.flatten(template)
        key = (treedef, tuple((x.shape, str(x.dtype)) for x in leaves))
        if key not in self._zeros:
            self._zeros[key] = zero_work(template)
        return self._zeros[key]

    # ------------------------------------------------------------------ one client
    def _final_one(self, ctx, shared: Shared, carry, bcast, client_state):
        message, client_state = self.algorithm.client_final(
            ctx, carry.algorithm, bcast, client_state
        )
        ms_delta = None
        if self.averages_state:
            ms_delta = model_delta(carry.model_state, shared.model_state)
        return Message(message, ms_delta), client_state

    def message_template(self, hp: dict, shared: Shared, rows: ClientRows) -> Message:
        """Shapes and dtypes of one client's :class:`Message` (traced, never run)."""

        def one(hp, shared, rows):
            carry, bcast = self._init(hp, shared, rows, None, batched=False)
            return self._final_one(self.make_ctx(hp), shared, carry, bcast, rows.state)[0]

        return jax.eval_shape(one, hp, shared, rows)

    # ------------------------------------------------------------------ rows of clients
    def _init(self, hp, shared: Shared, rows: ClientRows, ids, batched: bool):
        """Carries (and the broadcast) of the clients ``ids`` before local step 0."""
        ctx = self.make_ctx(hp)
        bcast = self.algorithm.broadcast(ctx, shared.params, shared.server_state)
        ms = rows.model_state if self.local_model_state else shared.model_state
        if not batched:
            return start_client(self.algorithm, ctx, bcast, rows.state, ms), bcast
        if not self.local_model_state:
            ms = broadcast_rows(ms, ids.shape[0])

        def one(_, client_state, model_state):
            return start_client(self.algorithm, ctx, bcast, client_state, model_state)

        return jax.vmap(one)(ids, rows.state, ms), bcast

    def _step(self, hp, carry, bcast, client_state, data, counts, ids, keys, t, gather, batched):
        """Local step ``t`` of the clients ``ids``."""
        ctx = self.make_ctx(hp)
        keys = jax.random.wrap_key_data(keys)
        if gather:
            data, counts = take(data, ids), take(counts, ids)

        def one(c, d, n, k, cs):
            return local_step(
                self.algorithm,
                ctx,
                c,
                d,
                n,
                k,
                t,
                bcast,
                cs,
                batch_size=self.batch_size,
                batch_rng=self.batch_rng,
            )

        if not batched:
            return one(carry, data, counts, keys, client_state)
        return jax.vmap(one)(carry, data, counts, keys, client_state)

    def _finish(self, hp, shared, work: Work, carry, bcast, rows, weights, batched, collect):
        """Folds finished clients into ``work``; returns it, messages, new rows, finiteness."""
        ctx = self.make_ctx(hp)

        def one(c, cs):
            return self._final_one(ctx, shared, c, bcast, cs)

        if batched:
            messages, new_state = jax.vmap(one)(carry, rows.state)
        else:
            messages, new_state = one(carry, rows.state)
            messages, new_state, carry, weights = jax.tree.map(
                lambda x: x[None], (messages, new_state, carry, weights)
            )
        new_ms = carry.model_state if self.local_model_state else None
        new_rows = ClientRows(new_state, new_ms)
        finite = jax.vmap(lambda _w, tree: all_finite(tree))(weights, (messages, new_rows))
        finite = finite | (weights == 0)
        losses = carry.loss_sum / self.local_steps
        w = weights.astype(jnp.float32)
        total = jax.tree.map(
            lambda t, m: t + jnp.tensordot(w, m.astype(jnp.float32), axes=1), work.total, messages
        )
        work = Work(
            total=total,
            weight=work.weight + jnp.sum(w),
            loss=work.loss + jnp.sum(w * losses),
            finite=work.finite & jnp.all(finite),
        )
        if not batched:
            new_rows = jax.tree.map(lambda x: x[0], new_rows)
        return work, (messages if collect else None), new_rows, finite

    def _train(self, hp, shared, work, rows, data, counts, ids, keys, weights, gather, batched):
        carry, bcast = self._init(hp, shared, rows, ids, batched)
        carry = run_steps(
            lambda t, c: self._step(
                hp, c, bcast, rows.state, data, counts, ids, keys, t, gather, batched
            ),
            carry,
            self.local_steps,
            unroll=self.unroll,
        )
        return carry, bcast

    def _whole(
        self, hp, shared, work, rows, data, counts, ids, keys, weights, gather, batched, collect
    ):
        carry, bcast = self._train(
            hp, shared, work, rows, data, counts, ids, keys, weights, gather, batched
        )
        return self._finish(hp, shared, work, carry, bcast, rows, weights, batched, collect)

    def _step_indices(self) -> list:
        """``[]`` int32 device scalars 0..local_steps-1, sent once, not on every step call."""
        if self._t is None:
            self._t = jax.device_put([np.int32(t) for t in range(self.local_steps)])
        return self._t

    def train_chunk(self, hp, shared, work, rows, chunk, *, batched, collect, step_programs):
        """Trains one chunk of clients: one program for all local steps, or one per step.

        Returns ``(work, messages or None, new client rows, finite)`` like ``finish``.
        """
        args = (chunk.data, chunk.counts, chunk.ids, chunk.keys)
        if not step_programs:
            return self.whole(
                hp, shared, work, rows, *args, chunk.weights, gather=chunk.gather,
                batched=batched, collect=collect,
            )  # fmt: skip
        carry, bcast = self.init(hp, shared, rows, chunk.ids, batched=batched)
        for t in self._step_indices():
            carry = self.step(
                hp, carry, bcast, rows.state, *args, t, gather=chunk.gather, batched=batched
            )
        return self.finish(
            hp, shared, work, carry, bcast, rows, chunk.weights, batched=batched, collect=collect
        )

    def _server(self, hp, shared: Shared, work: Work, mean: Message | None = None) -> Shared:
        """The new server side from the round's sums (or the secure ring's mean)."""
        ctx = self.make_ctx(hp)
        if mean is None:
            mean = jax.tree.map(lambda t: t / work.weight, work.total)
        params, server_state = self.algorithm.server_update(
            ctx, shared.params, shared.server_state, mean.algorithm
        )
        model_state = shared.model_state
        if self.averages_state:
            model_state = jax.tree.map(
                lambda s, d: (s + d).astype(s.dtype), model_state, mean.model_state
            )
        return Shared(params, model_state, server_state)

    def _fused(self, hp, shared, work, rows, data, counts, ids, keys, weights, gather):
        work, _, new_rows, finite = self._whole(
            hp, shared, work, rows, data, counts, ids, keys, weights, gather, True, False
        )
        return self._server(hp, shared, work), new_rows, work.loss / work.weight, finite
