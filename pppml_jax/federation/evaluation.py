"""Evaluation programs: each client's global and personalized model on its test split.

The global model is the algorithm's ``global_model``; the personalized one its
``personal_model``, after ``personalize_steps`` SGD steps of size ``hp["alpha"]`` on batches
of the client's *training* data when the algorithm fine-tunes. Test data never adapts a model.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from pppml_jax.algorithms.base import Algorithm, Context
from pppml_jax.algorithms.local_training import draw_batch
from pppml_jax.algorithms.personalize import personalize
from pppml_jax.federation.training import take
from pppml_jax.federation.types import ClientRows, Shared


class Evaluator:
    """Builds and holds the jitted evaluation programs of one federation.

    Args:
      algorithm: the algorithm.
      make_ctx: ``hp -> Context``.
      eval_fn: ``eval_fn(params, model_state, batch) -> [B]`` per-example metric.
      eval_chunk: test examples per evaluated chunk (the test block is padded to a multiple).
      personalize_steps, batch_size, batch_rng: as in ``FederationConfig``.
      local_model_state: each client keeps its own model state (rows of the client store).
    """

    def __init__(
        self,
        algorithm: Algorithm,
        make_ctx: Callable[[dict], Context],
        eval_fn: Callable,
        *,
        eval_chunk: int,
        personalize_steps: int,
        batch_size: int,
        batch_rng: str | None,
        local_model_state: bool,
    ):
        self.algorithm = algorithm
        self.make_ctx = make_ctx
        self.eval_fn = eval_fn
        self.eval_chunk = eval_chunk
        self.batch_size = batch_size
        self.batch_rng = batch_rng
        self.local_model_state = local_model_state
        self.steps = personalize_steps if algorithm.fine_tune else 0
        self.same_model = self.steps == 0 and algorithm.personal_model is algorithm.global_model
        flags = ("gather", "batched")
        self.rows = jax.jit(self._rows, static_argnames=flags)
        self.start = jax.jit(self._start, static_argnames=("batched",))
        self.metric = jax.jit(self._metric_rows, static_argnames=flags)
        self.adapt = jax.jit(self._adapt_rows, static_argnames=flags)
        self.personalized = jax.jit(self._personalized_rows, static_argnames=flags)

    def check_output(self, params, model_state, block) -> None:
        """Refuses an eval_fn that does not return one value per example (``[B]``).

        Args:
          block: the padded test :class:`ClientBlock`; its first chunk is traced, not run.
        """
        chunk = self.eval_chunk
        batch = {k: v[0, :chunk] for k, v in block.data.items()}
        out = jax.eval_shape(self.eval_fn, params, model_state, batch)
        shape = getattr(out, "shape", None)
        if shape != (chunk,):
            raise ValueError(
                f"eval_fn returned shape {shape} for a batch of {chunk} test examples; it must "
                f"return one value per example, shape ({chunk},) (e.g. per-example accuracy, "
                "not the batch mean)"
            )

    def masked_metric(self, params, model_state, test_data, num_test):
        """Mean of eval_fn over the real test examples.

        Examples whose value is NaN do not count (an eval_fn may exclude examples that way,
        e.g. Dice on slices where both masks are empty); ``nan`` when none counts.
        """
        chunk = self.eval_chunk
        chunks = jax.tree.map(lambda x: x.reshape(-1, chunk, *x.shape[1:]), test_data)
        n_chunks = jax.tree.leaves(chunks)[0].shape[0]

        def one(args):
            batch, start = args
            values = self.eval_fn(params, model_state, batch).astype(jnp.float32)
            valid = ((start + jnp.arange(chunk)) < num_test) & ~jnp.isnan(values)
            return jnp.sum(jnp.where(valid, values, 0.0)), jnp.sum(valid)

        starts = jnp.arange(n_chunks) * chunk
        totals, counts = jax.lax.map(one, (chunks, starts))
        count = jnp.sum(counts)
        return jnp.where(count > 0, jnp.sum(totals) / jnp.maximum(count, 1), jnp.nan)

    # ------------------------------------------------------------------ one client
    def _models(self, ctx, shared: Shared, client_state, model_state):
        g = self.algorithm.global_model(ctx, shared.params, client_state)
        p = self.algorithm.personal_model(ctx, shared.params, client_state)
        ms = model_state if self.local_model_state else shared.model_state
        return g, p, ms

    def _adapt_step(self, ctx, params, model_state, train_data, num_train, key, t):
        """Personalization step ``t``: one SGD step of size alpha on a training batch."""
        batch = draw_batch(
            jax.random.fold_in(key, t), train_data, num_train, self.batch_size, self.batch_rng
        )
        return personalize(
            lambda p, b: ctx.loss_fn(p, model_state, b)[0], params, batch, alpha=ctx.hp["alpha"]
        )

    def _personalized_one(self, ctx, shared, cs, ms, train, n_train, key):
        _, params, ms = self._models(ctx, shared, cs, ms)
        for t in range(self.steps):
            params = self._adapt_step(ctx, params, ms, train, n_train, key, t)
        return params

    def _client(self, ctx, shared, cs, ms, train, n_train, test, n_test, key):
        g, _, model_state = self._models(ctx, shared, cs, ms)
        base = self.masked_metric(g, model_state, test, n_test)
        if self.same_model:
            return base, base
        p = self._personalized_one(ctx, shared, cs, ms, train, n_train, key)
        return base, self.masked_metric(p, model_state, test, n_test)

    # ------------------------------------------------------------------ step programs
    def evaluate_steps(self, hp, shared, rows, chunk, test, *, batched: bool):
        """(global, personalized) metrics of a chunk, one compiled program per step."""
        g, p, ms = self.start(hp, shared, rows, chunk.ids, batched=batched)

        def metric(params):
            return self.metric(
                params, ms, test.data, test.counts, chunk.ids, gather=chunk.gather,
                batched=batched,
            )  # fmt: skip

        base = metric(g)
        if self.same_model:
            return base, base
        return base, metric(self.adapt_steps(hp, p, ms, chunk, batched=batched))

    def adapt_steps(self, hp, params, model_state, chunk, *, batched: bool):
        """The personalization steps of a chunk of clients, one compiled program per step."""
        for t in range(self.steps):
            params = self.adapt(
                hp, params, model_state, chunk.data, chunk.counts, chunk.ids, chunk.keys,
                np.int32(t), gather=chunk.gather, batched=batched,
            )  # fmt: skip
        return params

    # ------------------------------------------------------------------ rows of clients
    def _vmap(self, fn, ids, batched, *args):
        if not batched:
            return fn(*args)
        return jax.vmap(lambda _i, *a: fn(*a))(ids, *args)

    def _rows(
        self, hp, shared, rows: ClientRows, train, n_train, test, n_test, ids, keys, gather, batched
    ):
        """(global, personalized) metrics of the clients ``ids`` in one program."""
        ctx = self.make_ctx(hp)
        keys = jax.random.wrap_key_data(keys)
        if gather:
            train, n_train = take(train, ids), take(n_train, ids)
            test, n_test = take(test, ids), take(n_test, ids)

        def one(cs, ms, tr, ntr, te, nte, k):
            return self._client(ctx, shared, cs, ms, tr, ntr, te, nte, k)

        return self._vmap(
            one, ids, batched, rows.state, rows.model_state, train, n_train, test, n_test, keys
        )

    def _start(self, hp, shared, rows: ClientRows, ids, batched):
        """The (global, personal starting point, model state) models of clients ``ids``."""
        ctx = self.make_ctx(hp)
        g, p, ms = self._vmap(
            lambda cs, m: self._models(ctx, shared, cs, m),
            ids,
            batched,
            rows.state,
            rows.model_state,
        )
        return g, p, ms  # vmap broadcasts a shared model state to every row

    def _metric_rows(self, params, model_state, test, n_test, ids, gather, batched):
        if gather:
            test, n_test = take(test, ids), take(n_test, ids)
        return self._vmap(self.masked_metric, ids, batched, params, model_state, test, n_test)

    def _adapt_rows(self, hp, params, model_state, train, n_train, ids, keys, t, gather, batched):
        """Personalization step ``t`` of the clients ``ids`` (one program per step)."""
        ctx = self.make_ctx(hp)
        keys = jax.random.wrap_key_data(keys)
        if gather:
            train, n_train = take(train, ids), take(n_train, ids)

        def one(p, m, tr, n, k):
            return self._adapt_step(ctx, p, m, tr, n, k, t)

        return self._vmap(one, ids, batched, params, model_state, train, n_train, keys)

    def _personalized_rows(
        self, hp, shared, rows: ClientRows, train, n_train, ids, keys, gather, batched
    ):
        """Every personalization step of the clients ``ids`` in one program."""
        ctx = self.make_ctx(hp)
        keys = jax.random.wrap_key_data(keys)
        if gather:
            train, n_train = take(train, ids), take(n_train, ids)

        def one(cs, ms, tr, n, k):
            return self._personalized_one(ctx, shared, cs, ms, tr, n, k)

        return self._vmap(one, ids, batched, rows.state, rows.model_state, train, n_train, keys)
