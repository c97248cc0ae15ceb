"""The federated round: sample clients, train them (vmap or loop), aggregate, step the server.

A :class:`Federation` binds a loss, the clients' data and a :class:`FederationConfig` into
pure, jitted programs over an explicit :class:`FederationState`:

    fed = Federation(loss_fn, clients, config, eval_fn=eval_fn, test_clients=tests)
    state = fed.init(params)
    state, info = fed.round(state)          # a new state; the old one is never modified
    metrics = fed.evaluate(state)           # global and personalized metric per client

With ``execution="vmap"`` one compiled program trains every sampled client, averages and steps
the server. With ``"loop"`` a Python loop calls one compiled client program per client and a
second program aggregates; both give the same results (to float round-off). With secure
aggregation the clients' updates leave the device, go around the ring on the host, and the
decrypted mean comes back to the server step.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pppml_jax.algorithms.batching import sample_batch
from pppml_jax.algorithms.client_update import (
    ClientResult,
    make_client_update,
    perfedavg_rule,
    sgd_rule,
)
from pppml_jax.federation.aggregation import all_finite, client_deltas, server_step, weighted_mean
from pppml_jax.federation.clients import ClientBlock, stack_clients
from pppml_jax.federation.config import FederationConfig
from pppml_jax.federation.sampling import sample_clients
from pppml_jax.federation.state import FederationState
from pppml_jax.typing import Params

DEFAULT_SECURE: Mapping[str, Any] = {"backend": "bfv"}
"""Secure-aggregation options used by algorithm "pppml" when ``config.secure`` is None."""

# Streams of the run's PRNG: fold_in(fold_in(key(seed), round), STREAM), then the client id.
_TRAIN_STREAM, _EVAL_STREAM = 1, 2


class RoundError(RuntimeError):
    """A round failed; the federation state passed to it is unchanged and still valid."""


@dataclasses.dataclass(frozen=True)
class RoundInfo:
    """What one round did.

    Attributes:
      round: the number of completed rounds after this one (1 for the first round).
      seconds: wall time of the round in seconds (the first round includes compilation).
      train_loss: mean local training loss of the sampled clients, weighted by sample count.
      clients: ids of the clients sampled in this round, ascending.
      secure: statistics of the secure aggregation (None without it).
    """

    round: int
    seconds: float
    train_loss: float
    clients: tuple[int, ...]
    secure: dict | None = None


class Evaluation(NamedTuple):
    """Per-client metrics of one evaluation; ``nan`` for a client without test examples."""

    global_: np.ndarray  # [K] float64: the global model (own model for "local") on the test split
    personalized: np.ndarray  # [K] float64: after `personalize_steps` steps on training data


def resolve_execution(execution: str) -> str:
    """``"auto"`` -> ``"loop"`` on CPU, ``"vmap"`` on GPU/TPU (REFERENCE.md 4); else unchanged."""
    if execution == "auto":
        return "loop" if jax.default_backend() == "cpu" else "vmap"
    return execution


def _local_optimizer(config: FederationConfig) -> optax.GradientTransformation:
    if isinstance(config.local_optimizer, optax.GradientTransformation):
        return config.local_optimizer
    make = {"sgd": optax.sgd, "adam": optax.adam}[config.local_optimizer]
    return make(config.outer_lr)


def _stack_results(results: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *results)


def _take(tree: Any, index: Any) -> Any:
    return jax.tree.map(lambda x: x[index], tree)


def _broadcast(tree: Any, count: int) -> Any:
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (count, *jnp.shape(x))), tree)


class Federation:
    """A federation of clients bound to a loss, data and configuration (module docstring).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``; with ``stateful=True`` instead
        ``loss_fn(params, model_state, batch) -> (scalar, new_model_state)``.
      clients: the training data: a list (one per client) of dicts of ``[n_k, ...]`` arrays with
        the same keys, or a prepared :class:`ClientBlock`.
      config: the hyper-parameters.
      eval_fn: ``eval_fn(params, batch) -> [B]`` per-example metric (``eval_fn(params,
        model_state, batch)`` when stateful), evaluated in inference mode; needed for evaluate().
      test_clients: the test data, one per client, same keys as ``eval_fn`` needs.
      stateful: whether the model carries state (BatchNorm statistics).

    Raises:
      ValueError: on inconsistent data or options.
    """

    def __init__(
        self,
        loss_fn: Callable,
        clients: Sequence[Mapping[str, np.ndarray]] | ClientBlock,
        config: FederationConfig,
        *,
        eval_fn: Callable | None = None,
        test_clients: Sequence[Mapping[str, np.ndarray]] | ClientBlock | None = None,
        stateful: bool = False,
    ):
        self.config = config
        self.execution = resolve_execution(config.execution)
        self.stateful = stateful
        self.train_block = (
            clients if isinstance(clients, ClientBlock) else stack_clients(clients, what="clients")
        )
        self.num_clients = self.train_block.num_clients
        self.test_block = None
        if test_clients is not None:
            block = (
                test_clients
                if isinstance(test_clients, ClientBlock)
                else stack_clients(test_clients, what="test_clients", allow_empty=True)
            )
            if block.num_clients != self.num_clients:
                raise ValueError(
                    f"test_clients has {block.num_clients} clients but clients has "
                    f"{self.num_clients}; give one test split per client"
                )
            chunk = min(config.eval_batch_size, block.capacity)
            padded = -(-block.capacity // chunk) * chunk
            if padded != block.capacity:
                extra = padded - block.capacity
                block = ClientBlock(
                    {
                        k: np.pad(v, [(0, 0), (0, extra)] + [(0, 0)] * (v.ndim - 2))
                        for k, v in block.data.items()
                    },
                    block.num_examples,
                )
            self.test_block = block
            self._eval_chunk = chunk
        if stateful:
            self._loss = loss_fn
            self._eval = eval_fn
        else:
            self._loss = lambda p, s, b: (loss_fn(p, b), s)
            self._eval = None if eval_fn is None else (lambda p, s, b: eval_fn(p, b))

        rule = (
            perfedavg_rule(alpha=config.inner_lr, variant=config.variant, delta=config.delta)
            if config.is_meta
            else sgd_rule()
        )
        self._client_update = make_client_update(
            self._loss,
            rule,
            _local_optimizer(config),
            local_steps=config.local_steps,
            batch_size=config.batch_size,
            unroll=config.unroll,
        )
        self._server_opt = config.server_optimizer or optax.sgd(config.server_lr)
        self.secure_options = None
        if config.algorithm == "pppml" or config.secure is not None:
            self.secure_options = dict(
                config.secure if config.secure is not None else DEFAULT_SECURE
            )
        self._base_key = jax.random.key(config.seed)
        self._train_data = jax.device_put(self.train_block.data)
        self._train_counts = jnp.asarray(self.train_block.num_examples)
        self._weights_all = self.train_block.num_examples.astype(np.float32)
        if self.test_block is not None:
            self._test_data = jax.device_put(self.test_block.data)
            self._test_counts = jnp.asarray(self.test_block.num_examples)
        self._build_programs()

    # ----------------------------------------------------------------------------- state
    @property
    def _per_client_params(self) -> bool:
        return self.config.algorithm == "local"

    @property
    def _per_client_state(self) -> bool:
        return self.stateful and self.config.model_state_mode == "local"

    def init(self, params: Params, model_state: Any = None) -> FederationState:
        """The state before the first round.

        Args:
          params: the initial global model (every client starts from it).
          model_state: the initial model state (required when stateful, else must be None).
        """
        if self.stateful and model_state is None:
            raise ValueError("stateful=True needs the initial model_state (e.g. batch_stats)")
        if not self.stateful and model_state is not None:
            raise ValueError("model_state was given but stateful=False; pass stateful=True")
        params = jax.tree.map(jnp.asarray, params)
        model_state = None if model_state is None else jax.tree.map(jnp.asarray, model_state)
        k = self.num_clients
        return FederationState(
            round=0,
            params=params,
            model_state=model_state,
            server_opt_state=self._server_opt.init(params),
            client_params=_broadcast(params, k) if self._per_client_params else None,
            client_model_state=_broadcast(model_state, k) if self._per_client_state else None,
        )

    # ----------------------------------------------------------------------------- programs
    def _start(self, state_params, state_model_state, client_params, client_state, index):
        """The model and model state client(s) ``index`` start from (index: int or [m])."""
        params = _take(client_params, index) if self._per_client_params else state_params
        mstate = _take(client_state, index) if self._per_client_state else state_model_state
        return params, mstate

    def _updates(self, results: ClientResult, params, model_state) -> dict:
        """What each client sends: its parameter delta (and state delta when averaging)."""
        updates = {"params": client_deltas(results.params, params)}
        if self.stateful and self.config.model_state_mode == "average":
            updates["model_state"] = client_deltas(results.model_state, model_state)
        return updates

    def _apply(self, state_tuple, index, results: ClientResult, mean_update):
        """The new (params, model_state, opt_state, client_params, client_state)."""
        params, model_state, opt_state, client_params, client_state = state_tuple
        if self._per_client_params:
            client_params = jax.tree.map(
                lambda all_, new: all_.at[index].set(new), client_params, results.params
            )
        else:
            params, opt_state = server_step(
                self._server_opt, params, opt_state, mean_update["params"]
            )
            if "model_state" in mean_update:
                model_state = jax.tree.map(jnp.add, model_state, mean_update["model_state"])
        if self._per_client_state:
            client_state = jax.tree.map(
                lambda all_, new: all_.at[index].set(new), client_state, results.model_state
            )
        return params, model_state, opt_state, client_params, client_state

    def _build_programs(self) -> None:
        update = self._client_update

        def train_many(state_tuple, data_all, counts_all, index, keys):
            params, mstate = self._start(state_tuple[0], state_tuple[1], *state_tuple[3:], index)
            p_axis = 0 if self._per_client_params else None
            s_axis = 0 if self._per_client_state else None
            data = _take(data_all, index)
            return jax.vmap(update, in_axes=(p_axis, s_axis, 0, 0, 0))(
                params, mstate, data, counts_all[index], keys
            )

        def train_one(state_tuple, data_all, counts_all, k, key):
            params, mstate = self._start(state_tuple[0], state_tuple[1], *state_tuple[3:], k)
            return update(params, mstate, _take(data_all, k), counts_all[k], key)

        def mean_and_apply(state_tuple, index, results, weights):
            updates = self._updates(results, state_tuple[0], state_tuple[1])
            mean = weighted_mean(updates, weights)
            return self._apply(state_tuple, index, results, mean)

        def vmap_round(state_tuple, data_all, counts_all, index, keys, weights):
            results = train_many(state_tuple, data_all, counts_all, index, keys)
            finite = jax.vmap(all_finite)(results.params)
            new = mean_and_apply(state_tuple, index, results, weights)
            return results.loss, finite, new

        def updates_of(state_tuple, results):
            return self._updates(results, state_tuple[0], state_tuple[1])

        self._vmap_round = jax.jit(vmap_round)
        self._train_many = jax.jit(train_many)
        self._train_one = jax.jit(train_one)
        self._mean_and_apply = jax.jit(mean_and_apply)
        self._updates_of = jax.jit(updates_of)
        self._apply_mean = jax.jit(self._apply)
        self._finite_many = jax.jit(jax.vmap(all_finite))
        self._eval_one = jax.jit(self._eval_client_indexed)
        self._personalize_jit = jax.jit(self._personalize)

    # ----------------------------------------------------------------------------- round
    def round_key(self, round_index: int) -> jax.Array:
        """The PRNG key of round ``round_index`` (0-based)."""
        return jax.random.fold_in(self._base_key, round_index)

    def _client_keys(self, round_index: int, stream: int, ids: np.ndarray) -> jax.Array:
        base = jax.random.fold_in(self.round_key(round_index), stream)
        return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(ids, jnp.int32))

    def sampled_clients(self, round_index: int) -> np.ndarray:
        """Ids of the clients taking part in round ``round_index`` (ascending)."""
        return sample_clients(
            self.num_clients,
            self.config.clients_per_round,
            seed=self.config.seed,
            round_index=round_index,
        )

    def _train(self, state_tuple, ids: np.ndarray, keys: jax.Array) -> ClientResult:
        if self.execution == "vmap":
            return self._train_many(
                state_tuple, self._train_data, self._train_counts, jnp.asarray(ids), keys
            )
        results = [
            self._train_one(state_tuple, self._train_data, self._train_counts, int(k), keys[j])
            for j, k in enumerate(ids)
        ]
        return _stack_results(results)

    def round(self, state: FederationState) -> tuple[FederationState, RoundInfo]:
        """Runs round ``state.round`` and returns the new state and what happened.

        Raises:
          RoundError: a client's update is not finite, or the secure aggregation failed; the
            given ``state`` is untouched (JAX arrays are immutable) and can be used again.
        """
        start = time.perf_counter()
        r = int(state.round)
        ids = self.sampled_clients(r)
        keys = self._client_keys(r, _TRAIN_STREAM, ids)
        weights = jnp.asarray(self._weights_all[ids])
        index = jnp.asarray(ids)
        state_tuple = (
            state.params,
            state.model_state,
            state.server_opt_state,
            state.client_params,
            state.client_model_state,
        )
        secure_stats = None
        if self.execution == "vmap" and self.secure_options is None:
            losses, finite, new = self._vmap_round(
                state_tuple, self._train_data, self._train_counts, index, keys, weights
            )
            self._check_finite(r, ids, finite)
        else:
            results = self._train(state_tuple, ids, keys)
            self._check_finite(r, ids, self._finite_many(results.params))
            losses = results.loss
            if self.secure_options is None:
                new = self._mean_and_apply(state_tuple, index, results, weights)
            else:
                mean, secure_stats = self._secure_mean(r, state_tuple, results, ids)
                new = self._apply_mean(state_tuple, index, results, mean)
        jax.block_until_ready(new)
        losses = np.asarray(losses, dtype=np.float64)
        w = self._weights_all[ids].astype(np.float64)
        info = RoundInfo(
            round=r + 1,
            seconds=time.perf_counter() - start,
            train_loss=float(np.sum(w * losses) / np.sum(w)),
            clients=tuple(int(i) for i in ids),
            secure=secure_stats,
        )
        return FederationState(r + 1, *new), info

    def _check_finite(self, r: int, ids: np.ndarray, finite: jax.Array) -> None:
        finite = np.asarray(finite)
        if not finite.all():
            bad = [int(i) for i in ids[~finite]]
            raise RoundError(
                f"round {r}: clients {bad} produced non-finite parameters (NaN or inf); the "
                "federation state is unchanged. Lower the learning rate or check their data."
            )

    def _secure_mean(self, r: int, state_tuple, results: ClientResult, ids: np.ndarray):
        """Sends every client's update around the ring on the host; returns the decrypted mean."""
        from pppml_jax import secure  # host layer, imported only when used

        if self._per_client_params:
            raise RoundError("algorithm 'local' aggregates nothing; secure options do not apply")
        updates = jax.device_get(self._updates_of(state_tuple, results))
        per_client = [
            jax.tree.map(lambda x, j=j: np.asarray(x[j]), updates) for j in range(len(ids))
        ]
        weights = [float(w) for w in self._weights_all[ids]]
        options = dict(self.secure_options)
        try:
            res = secure.cyclic_aggregate(
                per_client,
                weights,
                round_index=r,
                seed=self.config.seed * 1_000_003 + r,
                **options,
            )
        except secure.SecureAggregationError as err:
            raise RoundError(
                f"round {r}: secure aggregation failed ({err}); the federation state is unchanged"
            ) from err
        mean = jax.tree.map(jnp.asarray, res.aggregate)
        stats = dict(getattr(res, "stats", None) or {})
        stats["initiator"] = int(ids[res.initiator])
        stats["messages"] = len(res.transcript)
        stats["bytes"] = int(sum(len(m.payload) for m in res.transcript))
        return mean, stats

    # ----------------------------------------------------------------------------- evaluation
    def _masked_metric(self, params, model_state, test_data, num_test):
        """Mean of eval_fn over the real test examples (``nan`` when there are none)."""
        chunk = self._eval_chunk
        chunks = jax.tree.map(lambda x: x.reshape(-1, chunk, *x.shape[1:]), test_data)
        n_chunks = jax.tree.leaves(chunks)[0].shape[0]

        def one(args):
            batch, start = args
            values = self._eval(params, model_state, batch).astype(jnp.float32)
            valid = (start + jnp.arange(chunk)) < num_test
            return jnp.sum(jnp.where(valid, values, 0.0))

        starts = jnp.arange(n_chunks) * chunk
        total = jnp.sum(jax.lax.map(one, (chunks, starts)))
        return jnp.where(num_test > 0, total / jnp.maximum(num_test, 1), jnp.nan)

    def _personalize(self, params, model_state, train_data, num_train, key):
        """``personalize_steps`` SGD steps of size alpha on batches of training data only."""
        grad = jax.grad(lambda p, b: self._loss(p, model_state, b)[0])
        for t in range(self.config.personalize_steps):
            batch = sample_batch(
                jax.random.fold_in(key, t), train_data, num_train, self.config.batch_size
            )
            params = jax.tree.map(
                lambda p, g: (p - self.config.inner_lr * g).astype(p.dtype),
                params,
                grad(params, batch),
            )
        return params

    def _eval_client(self, params, model_state, train_data, num_train, test_data, num_test, key):
        base = self._masked_metric(params, model_state, test_data, num_test)
        if self._per_client_params or self.config.personalize_steps == 0:
            return base, base
        adapted = self._personalize(params, model_state, train_data, num_train, key)
        return base, self._masked_metric(adapted, model_state, test_data, num_test)

    def _eval_client_indexed(
        self, state_tuple, train_all, n_train_all, test_all, n_test_all, k, key
    ):
        params, mstate = self._start(state_tuple[0], state_tuple[1], *state_tuple[3:], k)
        return self._eval_client(
            params,
            mstate,
            _take(train_all, k),
            n_train_all[k],
            _take(test_all, k),
            n_test_all[k],
            key,
        )

    def personalized_params(self, state: FederationState) -> Params:
        """``[K, ...]``: every client's personalized model, exactly as evaluate() adapts it.

        The global model (the client's own for "local") after ``personalize_steps`` SGD steps of
        size alpha on batches of that client's training data; no test data is read.
        """
        ids = np.arange(self.num_clients)
        keys = self._client_keys(int(state.round), _EVAL_STREAM, ids)
        out = []
        for k in ids:
            params, mstate = self._start(
                state.params, state.model_state, state.client_params, state.client_model_state, k
            )
            if not self._per_client_params:
                params = self._personalize_jit(
                    params, mstate, _take(self._train_data, k), self._train_counts[k], keys[k]
                )
            out.append(params)
        return _stack_results(out)

    def evaluate(self, state: FederationState) -> Evaluation:
        """Every client's metric on its test split, global and personalized.

        The personalized model takes ``personalize_steps`` SGD steps of size alpha on batches
        of the client's *training* data (REFERENCE.md 3.2: test data never adapts a model).
        For algorithm "local" both numbers are the client's own model.

        Raises:
          ValueError: if the federation was built without ``eval_fn`` and ``test_clients``.
        """
        if self._eval is None or self.test_block is None:
            raise ValueError("evaluate() needs eval_fn and test_clients when building Federation")
        ids = np.arange(self.num_clients)
        keys = self._client_keys(int(state.round), _EVAL_STREAM, ids)
        state_tuple = (
            state.params,
            state.model_state,
            state.server_opt_state,
            state.client_params,
            state.client_model_state,
        )
        if self.execution == "vmap":
            params = state.client_params if self._per_client_params else state.params
            mstate = state.client_model_state if self._per_client_state else state.model_state
            p_axis = 0 if self._per_client_params else None
            s_axis = 0 if self._per_client_state else None
            fn = self._eval_vmapped(p_axis, s_axis)
            g, p = fn(
                params,
                mstate,
                self._train_data,
                self._train_counts,
                self._test_data,
                self._test_counts,
                keys,
            )
        else:
            pairs = [
                self._eval_one(
                    state_tuple,
                    self._train_data,
                    self._train_counts,
                    self._test_data,
                    self._test_counts,
                    int(k),
                    keys[k],
                )
                for k in ids
            ]
            g = jnp.stack([a for a, _ in pairs])
            p = jnp.stack([b for _, b in pairs])
        return Evaluation(np.asarray(g, np.float64), np.asarray(p, np.float64))

    @functools.cache  # noqa: B019 - one compiled program per axes pair, for the object's lifetime
    def _eval_vmapped(self, p_axis, s_axis):
        return jax.jit(jax.vmap(self._eval_client, in_axes=(p_axis, s_axis, 0, 0, 0, 0, 0)))
