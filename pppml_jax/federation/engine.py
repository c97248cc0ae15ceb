"""The federated round: sample clients, train them (vmap or loop), aggregate, step the server.

A :class:`Federation` binds a loss, the clients' data and a :class:`FederationConfig` into
jitted programs over an explicit, immutable :class:`FederationState`::

    fed = Federation(loss_fn, clients, config, eval_fn=eval_fn, test_clients=tests)
    state = fed.init(params)
    state, info = fed.round(state)          # a new state; the old one stays valid
    metrics = fed.evaluate(state)           # global and personalized metric per client

Execution. ``"vmap"`` trains the sampled clients in chunks of ``chunk_size`` (default: all of
them) with one compiled program per chunk, the clients axis sharded over a device mesh
(:mod:`placement`); with a single chunk and no secure aggregation, training, averaging and the
server step are one program. ``"loop"`` calls one compiled client program per client. Updates
are summed as they come (``sum_i w_i u_i`` and ``sum_i w_i``), so memory is bounded by one
chunk, not by the federation. With secure aggregation the updates leave the device, go around
the ring on the host, and the decrypted mean comes back to the server step.

Failures. Nothing is committed until the round has succeeded: a round that raises leaves the
state it was given untouched (working copies are what the compiled programs update in place).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pppml_jax.algorithms.client_update import (
    ClientCarry,
    ClientResult,
    draw_batch,
    make_client_program,
    perfedavg_rule,
    sgd_rule,
)
from pppml_jax.algorithms.personalize import personalize
from pppml_jax.federation.aggregation import all_finite, client_deltas, server_step
from pppml_jax.federation.clients import ClientBlock, stack_clients
from pppml_jax.federation.config import FederationConfig
from pppml_jax.federation.placement import Placement, to_host
from pppml_jax.federation.sampling import num_sampled, sample_clients
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


def _take(tree: Any, index: Any) -> Any:
    """Rows ``index`` of every leaf; out-of-range rows (dummy clients) read the last row."""
    return jax.tree.map(lambda x: jnp.take(x, index, axis=0, mode="clip"), tree)


def _broadcast(tree: Any, count: int) -> Any:
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (count, *jnp.shape(x))), tree)


def _copy(tree: Any) -> Any:
    return jax.tree.map(jnp.copy, tree)


def _block_bytes(block: ClientBlock | None) -> int:
    return 0 if block is None else sum(v.nbytes for v in block.data.values())


class _Work(NamedTuple):
    """What the programs of one round update in place (donated): never the caller's state."""

    total: Any  # {"params": ..., ["model_state": ...]}: sum_i w_i * update_i, float32
    weight: jax.Array  # [] float32: sum_i w_i
    loss: jax.Array  # [] float32: sum_i w_i * loss_i
    finite: jax.Array  # [] bool: every trained client's model is finite so far
    client_params: Params | None  # [K, ...] per-client models ("local")
    client_model_state: Any  # [K, ...] per-client model state (model_state_mode "local")


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
        self.test_block = self._prepare_test_block(test_clients)
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
        self._program = make_client_program(
            self._loss,
            rule,
            _local_optimizer(config),
            local_steps=config.local_steps,
            batch_size=config.batch_size,
            batch_rng=config.batch_rng,
        )
        self.step_programs = (
            config.step_programs if config.step_programs is not None else self.execution == "loop"
        )
        self._server_opt = config.server_optimizer or optax.sgd(config.server_lr)
        self.secure_options = None
        if config.algorithm == "pppml" or config.secure is not None:
            self.secure_options = dict(
                config.secure if config.secure is not None else DEFAULT_SECURE
            )
        self._base_key = jax.random.key(config.seed)
        self._weights_all = self.train_block.num_examples.astype(np.float32)

        if self.execution == "vmap":
            self.placement = Placement(config.devices)
            devices = self.placement.num_devices
        else:
            self.placement = Placement(1)
            devices = 1
        sampled = num_sampled(self.num_clients, config.clients_per_round)
        chunk = min(config.chunk_size or sampled, sampled)
        self.chunk_size = -(-chunk // devices) * devices if self.execution == "vmap" else 1
        data_bytes = _block_bytes(self.train_block) + _block_bytes(self.test_block)
        placement = config.data_placement
        if placement == "auto":
            limit = config.device_data_limit_mb * 2**20
            placement = "device" if data_bytes <= limit else "host"
        self.data_placement = placement
        if placement == "device":
            put = self.placement.put_replicated
            self._resident = {"train": put(self.train_block)}
            if self.test_block is not None:
                self._resident["test"] = put(self.test_block)
        self._build_programs()

    def _prepare_test_block(self, test_clients) -> ClientBlock | None:
        if test_clients is None:
            return None
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
        self._eval_chunk = min(self.config.eval_batch_size, block.capacity)
        padded = -(-block.capacity // self._eval_chunk) * self._eval_chunk
        if padded == block.capacity:
            return block
        extra = padded - block.capacity
        data = {
            k: np.pad(v, [(0, 0), (0, extra)] + [(0, 0)] * (v.ndim - 2))
            for k, v in block.data.items()
        }
        return ClientBlock(data, block.num_examples)

    # ----------------------------------------------------------------------------- state
    @property
    def _per_client_params(self) -> bool:
        return self.config.algorithm == "local"

    @property
    def _per_client_state(self) -> bool:
        return self.stateful and self.config.model_state_mode == "local"

    @property
    def _averages_state(self) -> bool:
        return self.stateful and self.config.model_state_mode == "average"

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
        put = self.placement.put_replicated
        params = put(jax.tree.map(np.asarray, params))
        model_state = None if model_state is None else put(jax.tree.map(np.asarray, model_state))
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
    def _start(self, state: FederationState, ids, batched: bool = False):
        """The model and model state client(s) ``ids`` start from (ids: scalar or [C]).

        Batched, shared ones are broadcast to ``[C]`` rows; unbatched, a shared model is
        returned as is (callers that vmap it pass ``in_axes`` :meth:`_axes`).
        """
        params, model_state = state.params, state.model_state
        if self._per_client_params:
            params = _take(state.client_params, ids)
        if self._per_client_state:
            model_state = _take(state.client_model_state, ids)
        if batched:
            p_axis, s_axis = self._axes()
            if p_axis is None:
                params = _broadcast(params, ids.shape[0])
            if s_axis is None:
                model_state = _broadcast(model_state, ids.shape[0])
        return params, model_state

    def _updates(self, results: ClientResult, params, model_state) -> dict:
        """What each client sends: its parameter delta (and state delta when averaging)."""
        updates = {"params": client_deltas(results.params, params)}
        if self._averages_state:
            updates["model_state"] = client_deltas(results.model_state, model_state)
        return updates

    def _axes(self) -> tuple[int | None, int | None]:
        return (0 if self._per_client_params else None, 0 if self._per_client_state else None)

    def _init_rows(self, state, ids, batched: bool) -> ClientCarry:
        """The carries of clients ``ids`` ([C], or a scalar when not batched) before step 0.

        A client's own model and state come from ``state`` (each client is sampled once per
        round, so the round's work has not changed them yet).
        """
        params, mstate = self._start(state, ids, batched)
        if not batched:
            return self._program.init(params, mstate)
        return jax.vmap(self._program.init)(params, mstate)

    def _step_rows(self, carry, data, counts, ids, keys, t, gather: bool, batched: bool):
        """Local step ``t`` of clients ``ids``; ``gather``: data holds every client (rows ids)."""
        keys = jax.random.wrap_key_data(keys)
        if gather:
            data, counts = _take(data, ids), _take(counts, ids)
        if not batched:
            return self._program.step(carry, data, counts, keys, t)
        return jax.vmap(self._program.step, in_axes=(0, 0, 0, 0, None))(
            carry, data, counts, keys, t
        )

    def _finish_rows(self, state, work: _Work, carry, ids, weights, batched: bool):
        """Folds finished clients into ``work``; returns it, their updates, losses, finiteness."""
        if batched:
            results = jax.vmap(self._program.finalize)(carry)
        else:
            results = jax.tree.map(lambda x: x[None], self._program.finalize(carry))
            ids, weights = ids[None], weights[None]
        finite = jax.vmap(all_finite)(results.params) | (weights == 0)
        client_params, client_mstate = work.client_params, work.client_model_state
        if self._per_client_params:
            client_params = jax.tree.map(
                lambda a, n: a.at[ids].set(n, mode="drop"), client_params, results.params
            )
        if self._per_client_state:
            client_mstate = jax.tree.map(
                lambda a, n: a.at[ids].set(n, mode="drop"), client_mstate, results.model_state
            )
        updates = None
        if not self._per_client_params:
            updates = self._updates(results, state.params, state.model_state)
        w = weights.astype(jnp.float32)
        total = work.total
        if updates is not None:
            total = jax.tree.map(
                lambda t, u: t + jnp.tensordot(w, u.astype(jnp.float32), axes=1), total, updates
            )
        new_work = _Work(
            total=total,
            weight=work.weight + jnp.sum(w),
            loss=work.loss + jnp.sum(w * results.loss),
            finite=work.finite & jnp.all(finite),
            client_params=client_params,
            client_model_state=client_mstate,
        )
        return new_work, updates, results.loss, finite

    def _train_rows(self, state, work: _Work, data, counts, ids, keys, weights, gather, batched):
        """All local steps of clients ``ids`` in one program (steps unrolled or rolled)."""
        carry = self._init_rows(state, ids, batched)
        if self.config.unroll:
            for t in range(self.config.local_steps):
                carry = self._step_rows(carry, data, counts, ids, keys, t, gather, batched)
        else:
            carry = jax.lax.fori_loop(
                0,
                self.config.local_steps,
                lambda t, c: self._step_rows(c, data, counts, ids, keys, t, gather, batched),
                carry,
            )
        return self._finish_rows(state, work, carry, ids, weights, batched)

    def _finish(self, state: FederationState, work: _Work, mean=None):
        """The new state's arrays from the round's work (and the ring's mean, if secure)."""
        params, model_state, opt_state = state.params, state.model_state, state.server_opt_state
        if not self._per_client_params:
            if mean is None:
                mean = jax.tree.map(
                    lambda t, p: (t / work.weight).astype(p.dtype),
                    work.total,
                    self._update_template(state),
                )
            params, opt_state = server_step(self._server_opt, params, opt_state, mean["params"])
            if self._averages_state:
                model_state = jax.tree.map(jnp.add, model_state, mean["model_state"])
        return (params, model_state, opt_state, work.client_params, work.client_model_state)

    def _update_template(self, state: FederationState) -> dict:
        template = {"params": state.params}
        if self._averages_state:
            template["model_state"] = state.model_state
        return template

    def _new_work(self, state: FederationState) -> _Work:
        total = jax.tree.map(
            lambda x: jnp.zeros(jnp.shape(x), jnp.float32), self._update_template(state)
        )
        if self._per_client_params:
            total = {}
        return _Work(
            total=total,
            weight=jnp.zeros((), jnp.float32),
            loss=jnp.zeros((), jnp.float32),
            finite=jnp.ones((), bool),
            client_params=_copy(state.client_params),
            client_model_state=_copy(state.client_model_state),
        )

    def _build_programs(self) -> None:
        def fused(state, data, counts, ids, keys, weights, gather):
            work, _, _, finite = self._train_rows(
                state, self._new_work(state), data, counts, ids, keys, weights, gather, True
            )
            return self._finish(state, work), work.loss / work.weight, finite

        def whole(state, work, data, counts, ids, keys, weights, gather, batched, collect):
            work, updates, losses, finite = self._train_rows(
                state, work, data, counts, ids, keys, weights, gather, batched
            )
            return work, (updates if collect else None), losses, finite

        def finish(state, work, carry, ids, weights, batched, collect):
            work, updates, losses, finite = self._finish_rows(
                state, work, carry, ids, weights, batched
            )
            return work, (updates if collect else None), losses, finite

        flags = ("gather", "batched", "collect")
        self._fused = jax.jit(fused, static_argnames=("gather",))
        self._whole = jax.jit(whole, static_argnames=flags, donate_argnames=("work",))
        self._init_jit = jax.jit(self._init_rows, static_argnames=("batched",))
        # No donation of carries: a carry's params may be the caller's own buffer (forwarded)
        self._step_jit = jax.jit(self._step_rows, static_argnames=("gather", "batched"))
        self._finish_rows_jit = jax.jit(
            finish, static_argnames=("batched", "collect"), donate_argnames=("work",)
        )
        self._finish_jit = jax.jit(self._finish)
        self._eval_rows_jit = jax.jit(self._eval_rows, static_argnames=("gather", "batched"))
        self._metric_jit = jax.jit(self._metric_rows, static_argnames=("gather", "batched"))
        self._start_jit = jax.jit(self._start, static_argnames=("batched",))
        self._adapt_jit = jax.jit(self._adapt_rows, static_argnames=("gather", "batched"))
        self._personalize_rows_jit = jax.jit(
            self._personalize_rows, static_argnames=("gather", "batched")
        )

    def _train_chunk(self, state, work, chunk, collect: bool):
        """Trains one chunk of clients (a program per local step, or one for all of them)."""
        _, cid, keys, weights, data, counts, gather = chunk
        batched = self.execution == "vmap"
        if not self.step_programs:
            return self._whole(
                state,
                work,
                data,
                counts,
                cid,
                keys,
                weights,
                gather=gather,
                batched=batched,
                collect=collect,
            )
        carry = self._init_jit(state, cid, batched=batched)
        for t in range(self.config.local_steps):
            carry = self._step_jit(
                carry, data, counts, cid, keys, np.int32(t), gather=gather, batched=batched
            )
        return self._finish_rows_jit(
            state, work, carry, cid, weights, batched=batched, collect=collect
        )

    # ----------------------------------------------------------------------------- round
    def round_key(self, round_index: int) -> jax.Array:
        """The PRNG key of round ``round_index`` (0-based)."""
        return jax.random.fold_in(self._base_key, round_index)

    def _client_keys(self, round_index: int, stream: int, ids: np.ndarray) -> np.ndarray:
        """``[len(ids), 2]`` uint32 key data: fold_in(fold_in(round key, stream), client id)."""
        base = jax.random.fold_in(self.round_key(round_index), stream)
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(ids, jnp.int32))
        return np.asarray(jax.random.key_data(keys))

    def sampled_clients(self, round_index: int) -> np.ndarray:
        """Ids of the clients taking part in round ``round_index`` (ascending)."""
        return sample_clients(
            self.num_clients,
            self.config.clients_per_round,
            seed=self.config.seed,
            round_index=round_index,
        )

    def _chunks(self, ids: np.ndarray, key_data: np.ndarray, split: str = "train"):
        """Yields ``(real, ids, keys, weights, data, counts, gather)`` per chunk of clients.

        Chunks of vmap execution are padded with dummy clients (id K, weight 0) to one size, so
        one compiled program serves every chunk; loop execution yields single clients.
        """
        block = self.train_block if split == "train" else self.test_block
        size = self.chunk_size
        for start in range(0, len(ids), size):
            real = ids[start : start + size]
            keys = key_data[start : start + size]
            if self.execution == "loop":
                k = int(real[0])
                weight = np.float32(self._weights_all[k])
                if self.data_placement == "device":
                    data, counts = self._resident[split]
                    yield real, np.int32(k), keys[0], weight, data, counts, True
                else:
                    data = {n: v[k] for n, v in block.data.items()}
                    yield real, np.int32(k), keys[0], weight, data, block.num_examples[k], False
                continue
            pad = size - len(real)
            padded_ids = np.concatenate([real, np.full(pad, self.num_clients)]).astype(np.int32)
            padded_keys = np.concatenate([keys, np.repeat(keys[:1], pad, axis=0)])
            weights = np.concatenate([self._weights_all[real], np.zeros(pad, np.float32)])
            put = self.placement.put_clients
            if self.data_placement == "device":
                data, counts = self._resident[split]
                gather = True
            else:
                rows = np.minimum(padded_ids, self.num_clients - 1)
                data = put({n: v[rows] for n, v in block.data.items()})
                counts = put(block.num_examples[rows])
                gather = False
            yield (
                real,
                put(padded_ids),
                put(padded_keys),
                put(weights.astype(np.float32)),
                data,
                counts,
                gather,
            )

    def round(self, state: FederationState) -> tuple[FederationState, RoundInfo]:
        """Runs round ``state.round`` and returns the new state and what happened.

        Raises:
          RoundError: a client's update is not finite, or the secure aggregation failed; the
            given ``state`` is untouched and can be used again.
        """
        start = time.perf_counter()
        r = int(state.round)
        ids = self.sampled_clients(r)
        key_data = self._client_keys(r, _TRAIN_STREAM, ids)
        secure_stats = None
        one_chunk = self.execution == "vmap" and len(ids) <= self.chunk_size
        if one_chunk and self.secure_options is None and not self.step_programs:
            (_, cid, keys, weights, data, counts, gather) = next(self._chunks(ids, key_data))
            new, loss, finite = self._fused(state, data, counts, cid, keys, weights, gather)
            self._check_finite(r, ids, to_host(finite)[: len(ids)])
        else:
            collect = self.secure_options is not None
            work, collected, flags = self._new_work(state), [], []
            for chunk in self._chunks(ids, key_data):
                real = chunk[0]
                work, updates, _, finite = self._train_chunk(state, work, chunk, collect)
                flags.append((real, finite))
                if collect:
                    host = to_host(updates)
                    collected += [jax.tree.map(lambda x, j=j: x[j], host) for j in range(len(real))]
            finite = np.concatenate([np.atleast_1d(to_host(f))[: len(real)] for real, f in flags])
            self._check_finite(r, ids, finite)
            loss = work.loss / work.weight
            if collect:
                mean, secure_stats = self._secure_mean(r, collected, ids)
                new = self._finish_jit(state, work, mean)
            else:
                new = self._finish_jit(state, work)
        jax.block_until_ready(new)
        info = RoundInfo(
            round=r + 1,
            seconds=time.perf_counter() - start,
            train_loss=float(to_host(loss)),
            clients=tuple(int(i) for i in ids),
            secure=secure_stats,
        )
        return FederationState(r + 1, *new), info

    def _check_finite(self, r: int, ids: np.ndarray, finite: np.ndarray) -> None:
        finite = np.asarray(finite, bool)
        if not finite.all():
            bad = [int(i) for i in ids[~finite]]
            raise RoundError(
                f"round {r}: clients {bad} produced non-finite parameters (NaN or inf); the "
                "federation state is unchanged. Lower the learning rate or check their data."
            )

    def _secure_mean(self, r: int, updates: list, ids: np.ndarray):
        """Sends every client's update around the ring on the host; returns the decrypted mean."""
        from pppml_jax import secure  # host layer, imported only when used

        weights = [float(w) for w in self._weights_all[ids]]
        try:
            res = secure.cyclic_aggregate(
                updates,
                weights,
                round_index=r,
                seed=self.config.seed * 1_000_003 + r,
                **self.secure_options,
            )
        except secure.SecureAggregationError as err:
            raise RoundError(
                f"round {r}: secure aggregation failed ({err}); the federation state is unchanged"
            ) from err
        mean = self.placement.put_replicated(jax.tree.map(np.asarray, res.aggregate))
        st = res.stats
        stats = {
            "backend": st.backend.name,
            "initiator": int(ids[res.initiator]),
            "participants": [int(ids[i]) for i in st.participants],
            "dropped": [int(ids[c]) for c, _, _ in st.dropped],
            "clipped": st.clipped_total,
            "encrypted_params": st.encrypted_params,
            "messages": st.messages,
            "bytes": st.bytes_on_wire,
            "bytes_per_param": st.bytes_per_param,
            "seconds": st.seconds.get("total"),
            "error_bound": st.error_bound,
        }
        return mean, stats

    # ----------------------------------------------------------------------------- evaluation
    def _masked_metric(self, params, model_state, test_data, num_test):
        """Mean of eval_fn over the real test examples.

        Examples whose value is NaN do not count (an eval_fn may exclude examples that way,
        e.g. Dice on slices where both masks are empty); ``nan`` when none counts.
        """
        chunk = self._eval_chunk
        chunks = jax.tree.map(lambda x: x.reshape(-1, chunk, *x.shape[1:]), test_data)
        n_chunks = jax.tree.leaves(chunks)[0].shape[0]

        def one(args):
            batch, start = args
            values = self._eval(params, model_state, batch).astype(jnp.float32)
            valid = ((start + jnp.arange(chunk)) < num_test) & ~jnp.isnan(values)
            return jnp.sum(jnp.where(valid, values, 0.0)), jnp.sum(valid)

        starts = jnp.arange(n_chunks) * chunk
        totals, counts = jax.lax.map(one, (chunks, starts))
        count = jnp.sum(counts)
        return jnp.where(count > 0, jnp.sum(totals) / jnp.maximum(count, 1), jnp.nan)

    def _personalize_step(self, params, model_state, train_data, num_train, key, t):
        """Personalization step ``t``: :func:`~pppml_jax.algorithms.personalize` (one SGD step
        of size alpha) on a batch of the client's training data, drawn with ``key`` and ``t``."""
        batch = draw_batch(
            jax.random.fold_in(key, t),
            train_data,
            num_train,
            self.config.batch_size,
            self.config.batch_rng,
        )
        return personalize(
            lambda p, b: self._loss(p, model_state, b)[0],
            params,
            batch,
            alpha=self.config.inner_lr,
        )

    def _personalize(self, params, model_state, train_data, num_train, key):
        """``personalize_steps`` SGD steps of size alpha on batches of training data only."""
        for t in range(self.config.personalize_steps):
            params = self._personalize_step(params, model_state, train_data, num_train, key, t)
        return params

    def _eval_client(self, params, model_state, train_data, num_train, test_data, num_test, key):
        base = self._masked_metric(params, model_state, test_data, num_test)
        if self._per_client_params or self.config.personalize_steps == 0:
            return base, base
        adapted = self._personalize(params, model_state, train_data, num_train, key)
        return base, self._masked_metric(adapted, model_state, test_data, num_test)

    def _eval_rows(self, state, train, n_train, test, n_test, ids, keys, gather, batched):
        keys = jax.random.wrap_key_data(keys)
        if gather:
            train, n_train = _take(train, ids), _take(n_train, ids)
            test, n_test = _take(test, ids), _take(n_test, ids)
        params, mstate = self._start(state, ids)
        if not batched:
            return self._eval_client(params, mstate, train, n_train, test, n_test, keys)
        p_axis, s_axis = self._axes()
        return jax.vmap(self._eval_client, in_axes=(p_axis, s_axis, 0, 0, 0, 0, 0))(
            params, mstate, train, n_train, test, n_test, keys
        )

    def _metric_rows(self, params, mstate, test, n_test, ids, gather: bool, batched: bool):
        if gather:
            test, n_test = _take(test, ids), _take(n_test, ids)
        if not batched:
            return self._masked_metric(params, mstate, test, n_test)
        return jax.vmap(self._masked_metric)(params, mstate, test, n_test)

    def _adapt_rows(self, params, mstate, train, n_train, ids, keys, t, gather, batched):
        """Personalization step ``t`` (:meth:`_personalize_step`) of clients ``ids``."""
        keys = jax.random.wrap_key_data(keys)
        if gather:
            train, n_train = _take(train, ids), _take(n_train, ids)
        if not batched:
            return self._personalize_step(params, mstate, train, n_train, keys, t)
        return jax.vmap(self._personalize_step, in_axes=(0, 0, 0, 0, 0, None))(
            params, mstate, train, n_train, keys, t
        )

    def _evaluate_chunk(self, state, chunk, test_chunk):
        _, cid, keys, _, train, n_train, gather = chunk
        test, n_test = test_chunk[4], test_chunk[5]
        batched = self.execution == "vmap"
        if not self.step_programs:
            return self._eval_rows_jit(
                state, train, n_train, test, n_test, cid, keys, gather=gather, batched=batched
            )
        params, mstate = self._start_jit(state, cid, batched=batched)
        g = self._metric_jit(params, mstate, test, n_test, cid, gather=gather, batched=batched)
        if self._per_client_params or self.config.personalize_steps == 0:
            return g, g
        params = self._adapt_steps(params, mstate, chunk)
        p = self._metric_jit(params, mstate, test, n_test, cid, gather=gather, batched=batched)
        return g, p

    def _adapt_steps(self, params, mstate, chunk):
        """The personalization steps of one chunk of clients, one compiled program per step."""
        _, cid, keys, _, train, n_train, gather = chunk
        for t in range(self.config.personalize_steps):
            params = self._adapt_jit(
                params,
                mstate,
                train,
                n_train,
                cid,
                keys,
                np.int32(t),
                gather=gather,
                batched=self.execution == "vmap",
            )
        return params

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
        key_data = self._client_keys(int(state.round), _EVAL_STREAM, ids)
        pieces = []
        tests = self._chunks(ids, key_data, split="test")
        for chunk, test_chunk in zip(self._chunks(ids, key_data), tests, strict=True):
            g, p = self._evaluate_chunk(state, chunk, test_chunk)
            pieces.append((len(chunk[0]), g, p))
        g = np.concatenate([np.atleast_1d(to_host(g))[:n] for n, g, _ in pieces])
        p = np.concatenate([np.atleast_1d(to_host(p))[:n] for n, _, p in pieces])
        return Evaluation(g.astype(np.float64), p.astype(np.float64))

    def personalized_params(self, state: FederationState) -> Params:
        """``[K, ...]``: every client's personalized model, exactly as evaluate() adapts it.

        The global model (the client's own for "local") after ``personalize_steps`` SGD steps of
        size alpha on batches of that client's training data; no test data is read. Runs the
        same compiled programs as :meth:`evaluate`.
        """
        ids = np.arange(self.num_clients)
        key_data = self._client_keys(int(state.round), _EVAL_STREAM, ids)
        batched = self.execution == "vmap"
        out = []
        for chunk in self._chunks(ids, key_data):
            real, cid, keys, _, train, n_train, gather = chunk
            if self.step_programs:
                params, mstate = self._start_jit(state, cid, batched=batched)
                if not self._per_client_params:
                    params = self._adapt_steps(params, mstate, chunk)
            else:
                params = self._personalize_rows_jit(
                    state, train, n_train, cid, keys, gather=gather, batched=batched
                )
            host = to_host(params)
            if not batched:
                host = jax.tree.map(lambda x: x[None], host)
            count = len(real)
            out.append(jax.tree.map(lambda x, n=count: x[:n], host))
        return jax.tree.map(lambda *xs: np.concatenate(xs), *out)

    def _personalize_rows(self, state, train, n_train, ids, keys, gather: bool, batched: bool):
        """All personalization steps of clients ``ids`` in one program (no step programs)."""
        keys = jax.random.wrap_key_data(keys)
        if gather:
            train, n_train = _take(train, ids), _take(n_train, ids)
        params, mstate = self._start(state, ids, batched)
        if self._per_client_params:
            return params
        if not batched:
            return self._personalize(params, mstate, train, n_train, keys)
        return jax.vmap(self._personalize)(params, mstate, train, n_train, keys)
