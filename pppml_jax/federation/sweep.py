"""``pj.federation.run_many``: R runs (seeds x a grid of float hyper-parameters) at once.

Two strategies, same results as R separate :func:`~pppml_jax.federation.run` calls:

- ``"loop"``: the runs one after the other. They differ only in seeds and float
  hyper-parameters, which are arguments of the compiled programs, so the first run compiles
  and the others reuse its programs (:mod:`~pppml_jax.federation.compilation`).
- ``"vmap"``: every round of all R runs is one program, ``jax.vmap`` over a leading runs axis
  of the fused round (vmap execution over clients inside). Each run samples its own clients
  on the host from its seed; the sampled ids, keys, weights and client-state rows become
  ``[R, C, ...]`` arrays, and the program gathers each run's clients from the federation's
  data, which is on the device once. Evaluation is vmapped over runs the same way.

``"auto"`` picks ``"vmap"`` on accelerators, and on CPU when the loss has no convolution (XLA:CPU
runs vmapped convolutions slowly, see docs/method.md 4) and the run's options allow it; else
``"loop"``. benchmarks/RESULTS.md has the measurements behind this choice.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from pppml_jax.algorithms.registry import make_algorithm
from pppml_jax.federation import client_store
from pppml_jax.federation.compilation import shared
from pppml_jax.federation.config import FederationConfig
from pppml_jax.federation.engine import Federation
from pppml_jax.federation.hparams import resolve
from pppml_jax.federation.placement import to_host
from pppml_jax.federation.run import History, RoundRecord, run
from pppml_jax.federation.schedule import EVAL_STREAM, TRAIN_STREAM, Schedule
from pppml_jax.federation.state import FederationState
from pppml_jax.federation.training import zero_work
from pppml_jax.federation.types import (
    ClientRows,
    NonFiniteError,
    Shared,
    resolve_execution,
)

STRATEGIES = ("auto", "vmap", "loop")
CONFIG_FLOATS = ("lr", "alpha", "beta", "delta", "server_lr")
"""Grid names that are :class:`FederationConfig` fields; any other name must be one of the
algorithm's ``hparams`` (``mu``, ``lam``, ...)."""
_RUN_KEYWORDS = ("test_clients", "eval_fn", "model_state")


@dataclasses.dataclass(frozen=True)
class Point:
    """One run of a sweep: its seed and its grid values (``{"lr": 0.1, "mu": 0.01}``)."""

    seed: int
    values: Mapping[str, float]


def points(seeds: Sequence[int], grid: Mapping[str, Sequence[float]] | None) -> list[Point]:
    """The runs of a sweep, seed-major: ``[(s0, g0), (s0, g1), ..., (s1, g0), ...]``.

    ``g0, g1, ...`` is ``itertools.product`` over the grid's values in the grid's key order.
    """
    grid = dict(grid or {})
    names = list(grid)
    combos = list(itertools.product(*(list(grid[n]) for n in names))) if names else [()]
    return [Point(int(s), dict(zip(names, c, strict=True))) for s in seeds for c in combos]


def _run_options(options: dict, point: Point) -> dict:
    """``run``'s keyword options for ``point``: config floats set, algorithm hparams replaced."""
    options = {**options, "seed": point.seed}
    algo_values = {k: float(v) for k, v in point.values.items() if k not in CONFIG_FLOATS}
    options.update({k: float(v) for k, v in point.values.items() if k in CONFIG_FLOATS})
    if algo_values:
        algorithm = make_algorithm(options.get("algorithm", "fedavg"))
        unknown = sorted(set(algo_values) - set(algorithm.hparams))
        if unknown:
            raise ValueError(
                f"grid names {unknown} are neither run options ({', '.join(CONFIG_FLOATS)}) nor "
                f"hyper-parameters of {algorithm.name!r} ({', '.join(algorithm.hparams)})"
            )
        options["algorithm"] = algorithm._replace(hparams={**algorithm.hparams, **algo_values})
    return options


def _has_convolution(loss_fn: Callable, params, clients, model_state) -> bool:
    """Whether the loss's program holds a convolution (traced on one example, not run)."""
    batch = {k: np.asarray(v[:1]) for k, v in clients[0].items()}
    args = (params, batch) if model_state is None else (params, model_state, batch)
    text = str(jax.make_jaxpr(loss_fn)(*args))
    return "conv_general_dilated" in text


def _vmap_blockers(options: dict, kwargs: dict) -> list[str]:
    """Why the vmapped strategy cannot run these options (empty: it can)."""
    fields = {f.name for f in dataclasses.fields(FederationConfig)}
    blockers = [f"option {k!r}" for k in options if k not in fields]
    if kwargs.get("state") is not None:
        blockers.append("state=")
    if kwargs.get("callback") is not None:
        blockers.append("callback=")
    if options.get("secure") is not None:
        blockers.append("secure aggregation")
    if options.get("chunk_size") is not None:
        blockers.append("chunk_size")
    if options.get("step_programs"):
        blockers.append("step_programs=True")
    if options.get("data_placement") == "host":
        blockers.append("data_placement='host'")
    if options.get("devices") not in (None, 1) or jax.process_count() > 1:
        blockers.append("several devices")
    return blockers


def run_many(
    loss_fn: Callable,
    params,
    clients: Sequence[Mapping[str, np.ndarray]],
    *,
    seeds: Sequence[int] = (0,),
    grid: Mapping[str, Sequence[float]] | None = None,
    strategy: str = "auto",
    **run_options: Any,
) -> list[History]:
    """Runs every (seed, grid point) of a sweep; one :class:`History` per run.

    Args:
      loss_fn, params, clients: as for :func:`~pppml_jax.federation.run`.
      seeds: the seeds (each a separate run per grid point).
      grid: float hyper-parameters and their values, e.g. ``{"lr": [0.01, 0.05], "mu":
        [0.0, 0.1]}``: run options (``lr``, ``alpha``, ``beta``, ``delta``, ``server_lr``)
        or the algorithm's own (``mu``, ``lam``, ...). None: seeds only.
      strategy: "auto", "vmap" (one program per round for all runs) or "loop" (the runs in
        turn, sharing compiled programs); see the module docstring.
      **run_options: any other option of :func:`~pppml_jax.federation.run` (``algorithm``,
        ``rounds``, ``test_clients``, ``eval_fn``, ``model_state``, ...), the same for all.

    Returns:
      ``[History]`` in :func:`points` order (seed-major), each equal (within float
      tolerance) to ``run(loss_fn, params, clients, seed=seed, **values, **run_options)``. In
      the vmapped strategy a round record's ``seconds`` is the round's wall time over all
      runs divided by R.

    Raises:
      ValueError: on an unknown strategy or grid name, or "vmap" with options it cannot run.
      RoundError: a run's round failed (vmap: naming the run's seed and grid values).

    Example:
      >>> hists = pj.federation.run_many(loss, params, clients, seeds=range(5),
      ...                                grid={"lr": [0.01, 0.03, 0.1, 0.3]}, rounds=20)
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is unknown; use one of {', '.join(STRATEGIES)}")
    if "seed" in run_options:
        raise ValueError("run_many takes seeds=[...], not seed=")
    runs = points(seeds, grid)
    kwargs = {k: run_options.pop(k) for k in ("state", "callback") if k in run_options}
    options = {k: v for k, v in run_options.items() if k not in _RUN_KEYWORDS}
    blockers = _vmap_blockers(options, kwargs)
    if strategy == "vmap" and blockers:
        raise ValueError(f"strategy='vmap' cannot run {', '.join(blockers)}; use 'loop'")
    if strategy == "auto":
        use_vmap = not blockers and (
            resolve_execution(options.get("execution", "auto")) == "vmap"
            or (
                jax.default_backend() != "cpu"
                or not _has_convolution(loss_fn, params, clients, run_options.get("model_state"))
            )
        )
        strategy = "vmap" if use_vmap else "loop"
    if strategy == "loop":
        return [
            run(loss_fn, params, clients, **_run_options(run_options, p), **kwargs) for p in runs
        ]
    return _VmappedSweep(loss_fn, params, clients, runs, run_options).run()


class _VmappedSweep:
    """R runs of one algorithm as one vmapped program per round (see the module docstring)."""

    def __init__(self, loss_fn, params, clients, runs: list[Point], run_options: dict):
        self.runs = runs
        kw = {k: run_options.get(k) for k in _RUN_KEYWORDS}
        options = {k: v for k, v in run_options.items() if k not in _RUN_KEYWORDS}
        options = {**options, "execution": "vmap", "devices": 1, "step_programs": False}
        options["data_placement"] = "device"  # the programs gather each run's clients
        self.configs = [
            FederationConfig(**{**_run_options(options, p), "seed": p.seed}) for p in runs
        ]
        self.fed = Federation(
            loss_fn,
            clients,
            self.configs[0],
            eval_fn=kw["eval_fn"],
            test_clients=kw["test_clients"],
            stateful=kw["model_state"] is not None,
        )
        self.evaluate = kw["eval_fn"] is not None and kw["test_clients"] is not None
        fed = self.fed
        self.hps = [{k: np.float32(v) for k, v in resolve(c)[1].items()} for c in self.configs]
        self.schedules = [
            Schedule(
                fed.num_clients,
                c.clients_per_round,
                c.seed,
                batched=True,
                chunk_size=fed.chunk_size,
                placement=fed.placement,
                weights=fed.schedule.weights,
            )
            for c in self.configs
        ]
        states = [fed.init(params, kw["model_state"], hp=hp) for hp in self.hps]
        self.shared = jax.device_put(
            _stack([Shared(s.params, s.model_state, s.server_state) for s in states])
        )  # [R, ...] on the device from round to round
        self.stores = [ClientRows(s.client_state, s.client_model_state) for s in states]
        self.template = fed._message_template(states[0])
        self.hp = jax.device_put(_stack(self.hps))
        trainer, evaluator = fed.trainer, fed.evaluator
        self.round_program = shared(
            "sweep_round",
            (id(trainer),),
            lambda: jax.jit(
                jax.vmap(
                    functools.partial(_fused_gather, trainer),
                    in_axes=(0, 0, 0, 0, None, None, 0, 0, 0),
                )
            ),
        )
        self.eval_program = shared(
            "sweep_eval",
            (id(evaluator),),
            lambda: jax.jit(
                jax.vmap(
                    functools.partial(_eval_gather, evaluator),
                    in_axes=(0, 0, 0, None, None, None, None, None, 0),
                )
            ),
        )

    # -------------------------------------------------------------------- stacking
    def _rows(self, ids: np.ndarray) -> ClientRows:
        """``[R, C, ...]`` client-store rows of each run's clients ``ids[i]`` (on the device)."""
        rows = [
            ClientRows(client_store.gather(s.state, i), client_store.gather(s.model_state, i))
            for s, i in zip(self.stores, ids, strict=True)
        ]
        return jax.device_put(_stack(rows))

    def _padded(self, ids: np.ndarray) -> np.ndarray:
        size = self.fed.chunk_size
        return np.concatenate([ids, np.full(size - len(ids), self.fed.num_clients)]).astype(
            np.int32
        )

    # -------------------------------------------------------------------- rounds
    def round(self, r: int) -> list[dict]:
        """Round ``r`` of every run; updates the state and returns each run's record."""
        start = time.perf_counter()
        fed, size = self.fed, self.fed.chunk_size
        sampled = [s.sampled(r) for s in self.schedules]
        ids = np.stack([self._padded(i) for i in sampled])
        keys = np.stack(
            [
                _pad_keys(s.client_keys(r, TRAIN_STREAM, i), size)
                for s, i in zip(self.schedules, sampled, strict=True)
            ]
        )
        weights = np.where(
            ids < fed.num_clients, fed.schedule.weights[np.minimum(ids, fed.num_clients - 1)], 0
        ).astype(np.float32)
        work = _stack([zero_work(self.template)] * len(self.runs))
        data, counts = fed._resident["train"]
        new, new_rows, loss, finite = self.round_program(
            self.hp, self.shared, work, self._rows(ids), data, counts, ids, keys, weights
        )
        new_rows, loss, finite = to_host((new_rows, loss, finite))
        bad = [i for i in range(len(self.runs)) if not finite[i, : len(sampled[i])].all()]
        if bad:
            p = self.runs[bad[0]]
            raise NonFiniteError(
                f"round {r}: run with seed {p.seed} and {dict(p.values)} produced non-finite "
                "values (NaN or inf); lower its learning rate or run it alone with run()"
            )
        seconds = (time.perf_counter() - start) / len(self.runs)
        self.shared, records = new, []
        for i, store in enumerate(self.stores):
            row = jax.tree.map(lambda x, i=i: x[i], new_rows)
            self.stores[i] = ClientRows(
                client_store.scatter(client_store.to_numpy(store.state), [(sampled[i], row.state)]),
                client_store.scatter(
                    client_store.to_numpy(store.model_state), [(sampled[i], row.model_state)]
                ),
            )
            records.append(
                {
                    "round": r + 1,
                    "seconds": seconds,
                    "train_loss": float(loss[i]),
                    "clients": [int(k) for k in sampled[i]],
                }
            )
        return records

    def evaluate_all(self, r: int) -> list[dict]:
        """Every run's evaluation record after ``r`` rounds (vmapped over runs, chunked)."""
        start = time.perf_counter()
        fed, size, k = self.fed, self.fed.chunk_size, self.fed.num_clients
        (train, n_train), (test, n_test) = fed._resident["train"], fed._resident["test"]
        all_ids = np.arange(k)
        key_data = [s.client_keys(r, EVAL_STREAM, all_ids) for s in self.schedules]
        g_parts, p_parts = [], []
        shared_ = self.shared
        for begin in range(0, k, size):
            real = all_ids[begin : begin + size]
            ids = self._padded(real)
            keys = np.stack([_pad_keys(kd[begin : begin + size], size) for kd in key_data])
            rows = self._rows(np.stack([ids] * len(self.runs)))
            g, p = self.eval_program(
                self.hp, shared_, rows, train, n_train, test, n_test, ids, keys
            )
            g_parts.append(np.asarray(g)[:, : len(real)])
            p_parts.append(np.asarray(p)[:, : len(real)])
        g, p = np.concatenate(g_parts, axis=1), np.concatenate(p_parts, axis=1)
        seconds = (time.perf_counter() - start) / len(self.runs)
        return [
            {
                "mean_global": float(np.nanmean(g[i])),
                "mean_personalized": float(np.nanmean(p[i])),
                "per_client_global": [float(v) for v in g[i].astype(np.float64)],
                "per_client_personalized": [float(v) for v in p[i].astype(np.float64)],
                "eval_seconds": seconds,
            }
            for i in range(len(self.runs))
        ]

    def run(self) -> list[History]:
        config = self.configs[0]
        last, every = config.rounds, config.eval_every
        rounds: list[list[RoundRecord]] = [[] for _ in self.runs]
        for r in range(last):
            records = self.round(r)
            if self.evaluate and ((r + 1) % every == 0 or r + 1 == last):
                for record, extra in zip(records, self.evaluate_all(r + 1), strict=True):
                    record.update(extra)
            for history, record in zip(rounds, records, strict=True):
                history.append(RoundRecord.from_dict(record))
        shared_ = to_host(self.shared)
        histories = []
        for i, (store, h, c) in enumerate(zip(self.stores, rounds, self.configs, strict=True)):
            params, model_state, server_state = jax.tree.map(lambda x, i=i: x[i], shared_)
            state = FederationState(last, params, model_state, server_state, *store)
            histories.append(History(params, model_state, h, state, c))
        return histories


def _stack(trees: list) -> Any:
    """One pytree with a leading runs axis from R equal-structured pytrees (host numpy)."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def _pad_keys(keys: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([keys, np.repeat(keys[:1], size - len(keys), axis=0)])


def _fused_gather(trainer, hp, shared_, work, rows, data, counts, ids, keys, weights):
    return trainer._fused(hp, shared_, work, rows, data, counts, ids, keys, weights, True)


def _eval_gather(evaluator, hp, shared_, rows, train, n_train, test, n_test, ids, keys):
    return evaluator._rows(hp, shared_, rows, train, n_train, test, n_test, ids, keys, True, True)


__all__ = ["STRATEGIES", "Point", "points", "run_many"]
