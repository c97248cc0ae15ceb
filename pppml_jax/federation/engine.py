"""The federated round as a thin facade over the engine's parts, generic over the algorithm.

A :class:`Federation` binds a loss, the clients' data, a :class:`FederationConfig` and its
:class:`~pppml_jax.algorithms.Algorithm` into compiled programs over an explicit, immutable
:class:`FederationState`::

    fed = Federation(loss_fn, clients, config, eval_fn=eval_fn, test_clients=tests)
    state = fed.init(params)
    state, info = fed.round(state)          # a new state; the old one stays valid
    metrics = fed.evaluate(state)           # global and personalized metric per client

The parts: :mod:`schedule` (sampling, keys, chunks), :mod:`training` (the compiled training
programs), :mod:`evaluation`, :mod:`secure_hook` (the ring on the host), :mod:`client_store`
(per-client state on the host), :mod:`hparams` (the algorithm and its hyper-parameters) and
:mod:`programs` (compiled programs shared by federations of equal static structure).

Execution. ``"vmap"`` trains the sampled clients in chunks of ``chunk_size`` (default: all of
them) with one compiled program per chunk, the clients axis sharded over a device mesh; with a
single chunk and no secure aggregation, training, averaging and the server step are one
program. ``"loop"`` calls one compiled client program per client. Messages are summed as they
come, so memory is bounded by one chunk. With secure aggregation the messages leave the
device, go around the ring on the host, and the decrypted mean comes back to the server.

Failures. Nothing is committed until the round has succeeded: a round that raises leaves the
state it was given untouched.

Length. The module is a little over 400 lines because it is the one :class:`Federation` class,
whose methods (data placement, init, the round and its commit, evaluation) share its compiled
programs and placement; the work itself already lives in the parts above.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np

from pppml_jax.federation import client_store
from pppml_jax.federation.clients import ClientBlock, as_client_block, test_block
from pppml_jax.federation.config import STEP_PROGRAMS_ABOVE, FederationConfig
from pppml_jax.federation.evaluation import Evaluator
from pppml_jax.federation.hparams import context_factory, resolve
from pppml_jax.federation.placement import Placement, to_host
from pppml_jax.federation.programs import shared_programs
from pppml_jax.federation.sampling import num_sampled
from pppml_jax.federation.schedule import EVAL_STREAM, TRAIN_STREAM, Chunk, Schedule
from pppml_jax.federation.secure_hook import SecureHook
from pppml_jax.federation.state import FederationState
from pppml_jax.federation.types import (
    ClientRows,
    Evaluation,
    NonFiniteError,
    RoundInfo,
    Shared,
    resolve_execution,
)
from pppml_jax.typing import Params


def _block_bytes(block: ClientBlock | None) -> int:
    return 0 if block is None else sum(v.nbytes for v in block.data.values())


class Federation:
    """A federation of clients bound to a loss, data and configuration (module docstring).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``; with ``stateful=True`` instead
        ``loss_fn(params, model_state, batch) -> (scalar, new_model_state)``.
      clients: the training data: a list (one per client) of dicts of ``[n_k, ...]`` arrays with
        the same keys, or a prepared :class:`ClientBlock`.
      config: the hyper-parameters (``config.algorithm``: a name or an Algorithm value).
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
        self.algorithm, self.hparams, self.secure_options = resolve(config)
        self.train_block = as_client_block(clients, what="clients", finite=True)
        self.num_clients = self.train_block.num_clients
        if eval_fn is not None and test_clients is None:
            import warnings

            warnings.warn(
                "eval_fn was given without test_clients: nothing will be evaluated",
                UserWarning,
                stacklevel=2,
            )
        self.test_block = self._prepare_test_block(test_clients)
        if stateful:
            self._loss, self._eval = loss_fn, eval_fn
        else:
            self._loss = lambda p, s, b: (loss_fn(p, b), s)
            self._eval = None if eval_fn is None else (lambda p, s, b: eval_fn(p, b))
        batched = self.execution == "vmap"
        self.placement = Placement(config.devices if batched else 1)
        sampled = num_sampled(self.num_clients, config.clients_per_round)
        devices = self.placement.num_devices
        chunk = min(config.chunk_size or sampled, sampled)
        self.chunk_size = -(-chunk // devices) * devices if batched else 1
        # None in loop execution: decided by the model's size on the first round (_settle)
        self.step_programs = (
            config.step_programs
            if config.step_programs is not None
            else (None if not batched else False)
        )
        self.schedule = Schedule(
            self.num_clients,
            config.clients_per_round,
            config.seed,
            batched=batched,
            chunk_size=self.chunk_size,
            placement=self.placement,
            weights=self.train_block.num_examples.astype(np.float32),
        )
        self._make_ctx = context_factory(config, self._loss, sampled / self.num_clients)
        self._hp = {k: np.float32(v) for k, v in self.hparams.items()}
        # loop execution calls its programs many times a round: send hp to the device once
        self._hp_args = jax.device_put(self._hp) if not batched else self._hp
        local_state = stateful and config.model_state_mode == "local"
        self.local_model_state = local_state
        self.trainer, self.evaluator = shared_programs(
            self.algorithm,
            self._make_ctx,
            config,
            loss_fn=loss_fn,
            eval_fn=eval_fn,
            wrapped_eval=self._eval,
            stateful=stateful,
            participation=sampled / self.num_clients,
            eval_chunk=self._eval_chunk,
        )
        self._place_data()
        self._template = None
        self.secure = None
        if self.secure_options is not None:
            self.secure = SecureHook(self.secure_options, config.seed)

    def _place_data(self) -> None:
        placement = self.config.data_placement
        if placement == "auto":
            size = _block_bytes(self.train_block) + _block_bytes(self.test_block)
            limit = self.config.device_data_limit_mb * 2**20
            placement = "device" if size <= limit else "host"
        self.data_placement = placement
        self._resident = {"train": None, "test": None}
        if placement == "device":
            put = self.placement.put_replicated
            self._resident["train"] = put(tuple(self.train_block))
            if self.test_block is not None:
                self._resident["test"] = put(tuple(self.test_block))

    def _prepare_test_block(self, test_clients) -> ClientBlock | None:
        self._eval_chunk = 1
        if test_clients is None:
            return None
        block, self._eval_chunk = test_block(
            test_clients, self.num_clients, self.config.eval_batch_size
        )
        return block

    # ----------------------------------------------------------------------------- state
    def init(self, params: Params, model_state=None, *, hp=None) -> FederationState:
        """The state before the first round.

        Args:
          params: the initial global model (every client starts from it).
          model_state: the initial model state (required when stateful, else must be None).
          hp: the float hyper-parameters to initialize with (default: this federation's; a
            sweep passes each run's).
        """
        if self.stateful and model_state is None:
            raise ValueError("stateful=True needs the initial model_state (e.g. batch_stats)")
        if not self.stateful and model_state is not None:
            raise ValueError("model_state was given but stateful=False; pass stateful=True")
        put = self.placement.put_replicated
        params = put(jax.tree.map(np.asarray, params))
        model_state = None if model_state is None else put(jax.tree.map(np.asarray, model_state))
        ctx = self._make_ctx(self._hp if hp is None else hp)
        server_state = put(jax.tree.map(np.asarray, self.algorithm.init_server(ctx, params)))
        k = self.num_clients
        row = self.algorithm.init_client(ctx, params)
        client_state = None if row is None else client_store.stack_rows(to_host(row), k)
        client_ms = (
            client_store.stack_rows(to_host(model_state), k) if self.local_model_state else None
        )
        if self._eval is not None and self.test_block is not None:
            self.evaluator.check_output(params, model_state, self.test_block)
        return FederationState(0, params, model_state, server_state, client_state, client_ms)

    def _settle(self, state: FederationState) -> None:
        """Loop execution's default: a program per step only for models whose compile time
        dominates (more than ``STEP_PROGRAMS_ABOVE`` parameters); one per client below."""
        if self.step_programs is None:
            size = sum(int(np.size(x)) for x in jax.tree.leaves(state.params))
            self.step_programs = size > STEP_PROGRAMS_ABOVE

    def _shared(self, state: FederationState) -> Shared:
        return Shared(state.params, state.model_state, state.server_state)

    def _rows(self, state: FederationState, chunk: Chunk) -> ClientRows:
        """The client-store rows of a chunk, on the device."""
        cs, ms = state.client_state, state.client_model_state
        if cs is None and ms is None:  # nothing per client (FedAvg): no transfer at all
            return ClientRows(None, None)
        if self.execution == "loop":
            k = int(chunk.real[0])
            return jax.device_put(ClientRows(client_store.row(cs, k), client_store.row(ms, k)))
        pad = np.concatenate(
            [chunk.real, np.full(self.chunk_size - len(chunk.real), self.num_clients)]
        )
        rows = ClientRows(client_store.gather(cs, pad), client_store.gather(ms, pad))
        return self.placement.put_clients(rows)

    def _message_template(self, state: FederationState):
        if self._template is None:
            rows = ClientRows(
                client_store.row(state.client_state, 0),
                client_store.row(state.client_model_state, 0),
            )
            self._template = self.trainer.message_template(self._hp, self._shared(state), rows)
            if self.secure_options is not None and not jax.tree.leaves(self._template):
                raise ValueError(
                    f"algorithm {self.algorithm.name!r} sends nothing to the server: drop the "
                    "secure options"
                )
        return self._template

    # ----------------------------------------------------------------------------- round
    def sampled_clients(self, round_index: int) -> np.ndarray:
        """Ids of the clients taking part in round ``round_index`` (ascending)."""
        return self.schedule.sampled(round_index)

    def _chunks(self, ids, key_data, split: str = "train", send_small: bool = True):
        block = self.train_block if split == "train" else self.test_block
        return self.schedule.chunks(ids, key_data, block, self._resident[split], send_small)

    def round(self, state: FederationState) -> tuple[FederationState, RoundInfo]:
        """Runs round ``state.round`` and returns the new state and what happened.

        Raises:
          RoundError: a client's output is not finite, or the secure aggregation failed; the
            given ``state`` is untouched and can be used again.
        """
        start = time.perf_counter()
        self._settle(state)
        r = int(state.round)
        template = self._message_template(state)
        ids = self.sampled_clients(r)
        key_data = self.schedule.client_keys(r, TRAIN_STREAM, ids)
        shared, hp = self._shared(state), self._hp_args
        secure_stats, pending = None, []
        one_chunk = self.execution == "vmap" and len(ids) <= self.chunk_size
        if one_chunk and self.secure_options is None and not self.step_programs:
            chunk = next(self._chunks(ids, key_data))
            rows = self._rows(state, chunk)
            new, new_rows, loss, finite = self.trainer.fused(
                hp,
                shared,
                self.trainer.empty_work(template),
                rows,
                chunk.data,
                chunk.counts,
                chunk.ids,
                chunk.keys,
                chunk.weights,
                gather=chunk.gather,
            )
            self._check_finite(r, ids, to_host(finite)[: len(ids)])
            pending.append((chunk.real, new_rows))
        else:
            collect = self.secure_options is not None
            work, collected, flags = self.trainer.empty_work(template), [], []
            chunks = self._chunks(ids, key_data, send_small=self.step_programs)
            for chunk in chunks:
                work, messages, new_rows, finite = self._train_chunk(state, work, chunk, collect)
                flags.append((chunk.real, finite))
                pending.append((chunk.real, new_rows))
                if collect:
                    host = to_host(messages)
                    n = len(chunk.real)
                    collected += [jax.tree.map(lambda x, j=j: x[j], host) for j in range(n)]
            if not bool(to_host(work.finite)):  # one sync; per-client flags only on failure
                finite = [np.atleast_1d(to_host(f))[: len(real)] for real, f in flags]
                self._check_finite(r, ids, np.concatenate(finite))
            loss = work.loss / work.weight
            mean = None
            if collect:
                weights = self.schedule.weights[ids]
                mean, secure_stats = self.secure.mean(r, collected, weights, ids)
                mean = self.placement.put_replicated(mean)
            new = self.trainer.server(hp, shared, work, mean)
        jax.block_until_ready(new)
        client_state, client_ms = self._commit(state, pending)
        info = RoundInfo(
            round=r + 1,
            seconds=time.perf_counter() - start,
            train_loss=float(to_host(loss)),
            clients=tuple(int(i) for i in ids),
            secure=secure_stats,
        )
        return FederationState(r + 1, *new, client_state, client_ms), info

    def _train_chunk(self, state, work, chunk: Chunk, collect: bool):
        """Trains one chunk of clients (a program per local step, or one for all of them)."""
        return self.trainer.train_chunk(
            self._hp_args,
            self._shared(state),
            work,
            self._rows(state, chunk),
            chunk,
            batched=self.execution == "vmap",
            collect=collect,
            step_programs=self.step_programs,
        )

    def _commit(self, state: FederationState, pending):
        """The client store after the round: the trained clients' new rows, in copies."""
        updates = [(real, to_host(rows)) for real, rows in pending]
        if self.execution == "loop":
            updates = [(real, jax.tree.map(lambda x: x[None], rows)) for real, rows in updates]
        cs = client_store.scatter(
            client_store.to_numpy(state.client_state), [(r, u.state) for r, u in updates]
        )
        ms = client_store.scatter(
            client_store.to_numpy(state.client_model_state),
            [(r, u.model_state) for r, u in updates],
        )
        return cs, ms

    def _check_finite(self, r: int, ids: np.ndarray, finite: np.ndarray) -> None:
        finite = np.asarray(finite, bool)
        if not finite.all():
            bad = [int(i) for i in ids[~finite]]
            raise NonFiniteError(
                f"round {r}: clients {bad} produced non-finite values (NaN or inf); the "
                "federation state is unchanged. Lower the learning rate or check their data."
            )

    # ----------------------------------------------------------------------------- evaluation
    def _evaluator(self) -> Evaluator:
        if self._eval is None or self.test_block is None:
            raise ValueError("evaluate() needs eval_fn and test_clients when building Federation")
        return self.evaluator

    def evaluate(self, state: FederationState) -> Evaluation:
        """Every client's metric on its test split, global and personalized.

        Raises:
          ValueError: if the federation was built without ``eval_fn`` and ``test_clients``.
        """
        ev = self._evaluator()
        self._settle(state)
        ids = np.arange(self.num_clients)
        key_data = self.schedule.client_keys(int(state.round), EVAL_STREAM, ids)
        batched = self.execution == "vmap"
        shared, hp = self._shared(state), self._hp_args
        pieces = []
        tests = self._chunks(ids, key_data, split="test")
        for chunk, test in zip(self._chunks(ids, key_data), tests, strict=True):
            rows = self._rows(state, chunk)
            if not self.step_programs:
                g, p = ev.rows(
                    hp,
                    shared,
                    rows,
                    chunk.data,
                    chunk.counts,
                    test.data,
                    test.counts,
                    chunk.ids,
                    chunk.keys,
                    gather=chunk.gather,
                    batched=batched,
                )
            else:
                g, p = ev.evaluate_steps(self._hp_args, shared, rows, chunk, test, batched=batched)
            pieces.append((len(chunk.real), g, p))
        g = np.concatenate([np.atleast_1d(to_host(g))[:n] for n, g, _ in pieces])
        p = np.concatenate([np.atleast_1d(to_host(p))[:n] for n, _, p in pieces])
        return Evaluation(g.astype(np.float64), p.astype(np.float64))

    def personalized_params(self, state: FederationState) -> Params:
        """``[K, ...]``: every client's personalized model, exactly as evaluate() adapts it.

        The algorithm's personal model after its fine-tuning steps on batches of that client's
        training data; no test data is read. Runs the same compiled programs as evaluate().
        """
        ev = self.evaluator
        self._settle(state)
        ids = np.arange(self.num_clients)
        key_data = self.schedule.client_keys(int(state.round), EVAL_STREAM, ids)
        batched = self.execution == "vmap"
        shared, out = self._shared(state), []
        for chunk in self._chunks(ids, key_data):
            rows = self._rows(state, chunk)
            if self.step_programs:
                _, params, ms = ev.start(self._hp_args, shared, rows, chunk.ids, batched=batched)
                params = ev.adapt_steps(self._hp_args, params, ms, chunk, batched=batched)
            else:
                params = ev.personalized(
                    self._hp_args,
                    shared,
                    rows,
                    chunk.data,
                    chunk.counts,
                    chunk.ids,
                    chunk.keys,
                    gather=chunk.gather,
                    batched=batched,
                )
            host = to_host(params)
            if not batched:
                host = jax.tree.map(lambda x: x[None], host)
            count = len(chunk.real)
            out.append(jax.tree.map(lambda x, n=count: x[:n], host))
        return jax.tree.map(lambda *xs: np.concatenate(xs), *out)
