"""config -> data, model, federations -> results.json, summary.md and figures."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pppml_jax import models as model_zoo
from pppml_jax.experiments.aggregate import combine, compare, seed_final
from pppml_jax.experiments.config import ConfigError, ExperimentConfig
from pppml_jax.experiments.fingerprint import checkpoint_key, prepare_run_dir
from pppml_jax.experiments.jsonable import jsonable
from pppml_jax.experiments.tasks import TaskFunctions, task_functions
from pppml_jax.experiments.tracking import Tracker
from pppml_jax.federation.checkpoint import Checkpointer
from pppml_jax.federation.engine import Federation
from pppml_jax.federation.placement import to_host
from pppml_jax.federation.run import DivergenceError, iter_rounds
from pppml_jax.federation.state import FederationState

Callback = Callable[[dict], None]


def build_model(spec: Mapping[str, Any], *, num_classes: int):
    """The Flax module ``spec["name"]`` of :mod:`pppml_jax.models` with ``spec["options"]``.

    ``num_classes`` comes from the data unless the options set it. ``spec``: a
    :class:`~pppml_jax.experiments.config.ModelConfig` or a mapping with the same keys.
    """
    if dataclasses.is_dataclass(spec):
        spec = {"name": spec.name, "options": spec.options}
    name = spec["name"]
    available = sorted(n for n in model_zoo.__all__ if callable(getattr(model_zoo, n)))
    if name not in available:
        raise ValueError(f"model.name={name!r} is not in pppml_jax.models ({', '.join(available)})")
    cls = getattr(model_zoo, name)
    options = dict(spec.get("options") or {})
    options.setdefault("num_classes", num_classes)
    try:
        return cls(**options)
    except TypeError as err:
        raise ValueError(f"model {name}: bad options {options} ({err})") from err


def load_data(spec: Mapping[str, Any], *, seed: int):
    """``pppml_jax.data.load_federation(spec["name"], seed=seed, **spec["options"])``."""
    from pppml_jax import data

    if dataclasses.is_dataclass(spec):
        spec = {"name": spec.name, "options": spec.options}
    options = dict(spec.get("options") or {})
    options.setdefault("seed", seed)
    return data.load_federation(spec["name"], **options)


def _client_view(state: FederationState, k: int, personalized):
    """Client ``k``'s personalized params and its model state (for predictions)."""
    params = jax.tree.map(lambda x: x[k], personalized)
    if state.client_model_state is not None:
        mstate = jax.tree.map(lambda x: x[k], state.client_model_state)
    else:
        mstate = state.model_state
    return params, mstate


def _examples(fns: TaskFunctions, fed_data, state, federation, count: int) -> list[dict]:
    """Up to ``count`` test images per client with truth and the personalized prediction."""
    if count <= 0:
        return []
    personalized = federation.personalized_params(state)
    out = []
    for k, client in enumerate(fed_data.clients):
        images = client.test["image"]
        if len(images) == 0:
            continue
        if fed_data.task == "segmentation":  # the slices with the most lesion first
            order = np.argsort(-client.test["mask"].reshape(len(images), -1).sum(1), kind="stable")
        else:
            order = np.arange(len(images))
        chosen = order[:count]
        params, mstate = _client_view(state, k, personalized)
        pred = np.asarray(fns.predict(params, mstate, jnp.asarray(images[chosen])))
        truth = (
            client.test["mask"][chosen]
            if fed_data.task == "segmentation"
            else client.test["label"][chosen]
        )
        out.append({"client": client.name, "image": images[chosen], "truth": truth, "pred": pred})
    return out


def _train(federation, state, label: str, seed: int, config, out_dir: Path, resume, emit, tracker):
    """Runs the rounds of one (algorithm, seed), checkpointing.

    Returns ``(state, rounds, divergence)``: the final state (the last good one when the run
    diverged), the round records, and the :class:`DivergenceError`'s facts or None.
    """
    fconfig = federation.config
    every = config.checkpoint.every
    checkpointer = None
    if every > 0:  # prepare_run_dir left no other run's checkpoints here
        directory = out_dir / "checkpoints" / label / f"seed-{seed}"
        checkpointer = Checkpointer(directory, keep=config.checkpoint.keep)
    fingerprint = checkpoint_key(config, label, seed)  # all but rounds: --extend may add some
    rounds: list[dict] = []
    if resume and checkpointer is not None:
        restored = checkpointer.restore_latest(state)
        if restored is not None:
            state, record = restored
            if record.get("fingerprint") != fingerprint:
                raise ConfigError(
                    f"the checkpoint of {label} (seed {seed}) in {checkpointer.directory} was "
                    "made with another configuration; run without --resume to start again"
                )
            rounds = list(record["history"])
            emit({"event": "resume", "algorithm": label, "seed": seed, "round": state.round})
    emit(
        {
            "event": "start",
            "algorithm": label,
            "seed": seed,
            "rounds": fconfig.rounds,
            "execution": federation.execution,
            "from_round": state.round,
        }
    )
    tracker.start(label, seed, config.federation_fields(label))
    steps = iter_rounds(
        federation,
        state,
        fconfig.rounds,
        divergence_factor=config.divergence.factor,
        first_loss=rounds[0]["train_loss"] if rounds else None,
    )
    try:
        for state, record in steps:  # the state after each round; unchanged if none is left
            rounds.append(jsonable(record))
            tracker.round(record)
            emit(
                {"event": "round", "algorithm": label, "seed": seed, "of": fconfig.rounds, **record}
            )
            done = record["round"]
            if checkpointer is not None and (done % every == 0 or done == fconfig.rounds):
                checkpointer.save(
                    state, {"algorithm": label, "fingerprint": fingerprint, "history": rounds}
                )
    except DivergenceError as err:
        emit({"event": "diverged", "algorithm": label, "seed": seed, **err.to_dict()})
        tracker.finish("diverged", None)
        return state, rounds, jsonable(err.to_dict())
    return state, rounds, None


def _save_model(state, algorithm: str, seed: int, out_dir: Path) -> None:
    """Writes the final model(s) as Flax msgpack: models/<algorithm>/seed-<seed>.msgpack."""
    from flax import serialization

    target = {
        "params": state.client_params if state.client_params is not None else state.params,
        "model_state": state.client_model_state
        if state.client_model_state is not None
        else state.model_state,
    }
    (out_dir / "models" / algorithm).mkdir(parents=True, exist_ok=True)
    (out_dir / "models" / algorithm / f"seed-{seed}.msgpack").write_bytes(
        serialization.to_bytes(to_host(target))
    )


def _setup(config: ExperimentConfig, seed: int, emit):
    """The data of ``seed``, the model initialised from ``seed`` and its task functions."""
    started = time.perf_counter()
    fed_data = load_data(config.data, seed=seed)
    emit(
        {
            "event": "data",
            "seed": seed,
            "task": fed_data.task,
            "clients": [c.name for c in fed_data.clients],
            "n_train": [len(c.train["image"]) for c in fed_data.clients],
            "n_val": [len(c.val["image"]) for c in fed_data.clients],
            "n_test": [len(c.test["image"]) for c in fed_data.clients],
            "seconds": time.perf_counter() - started,
        }
    )
    model = build_model(config.model, num_classes=fed_data.num_classes)
    sample = jnp.asarray(fed_data.clients[0].train["image"][:1])
    variables = model.init(jax.random.key(seed), sample, train=False)
    fns = task_functions(
        fed_data.task, model, variables, sample=sample, empty_masks=config.evaluation.empty_masks
    )
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"} or None
    return fed_data, (fns, params, model_state)


def _tune(config, fed_data, model, seed: int, out_dir: Path, resume: bool, emit):
    """Tunes (or, resuming, reads ``tuning.json``); returns the tuned config and the record."""
    from pppml_jax.experiments.tuning import apply_record, tune_experiment

    path = out_dir / "tuning.json"
    if resume and path.is_file():  # the fingerprint guard made sure it is this run's search
        record = json.loads(path.read_text())
        emit({"event": "tuned", "resumed": True})
        return apply_record(config, record), record
    tuned, record = tune_experiment(config, fed_data, model, seed=seed, emit=emit)
    path.write_text(json.dumps(record, indent=1))
    emit({"event": "tuned", "resumed": False})
    return tuned, record


def _run_seed(config, seed, fed_data, model, out_dir, resume, emit, tracker, examples_for):
    """Every algorithm on ``seed``; returns ``{label: per-seed record}`` and example images."""
    fns, params, model_state = model
    clients = [
        {"name": c.name, "n_train": len(c.train["image"]), "n_test": len(c.test["image"])}
        for c in fed_data.clients
    ]
    train = [c.train for c in fed_data.clients]
    test = [c.test for c in fed_data.clients]
    records, examples = {}, {}
    for label in config.labels:
        fconfig = config.federation_config(label, seed=seed)
        if fns.batch_rng is not None and fconfig.batch_rng is None:
            fconfig = fconfig.replace(batch_rng=fns.batch_rng)  # dropout keys in every batch
        federation = Federation(
            fns.loss,
            train,
            fconfig,
            eval_fn=fns.per_example,
            test_clients=test,
            stateful=fns.stateful,
        )
        state = federation.init(params, model_state)
        state, rounds, divergence = _train(
            federation, state, label, seed, config, out_dir, resume, emit, tracker
        )
        record = {
            "status": "ok" if divergence is None else "diverged",
            "rounds": rounds,
            "final": None,
            "seconds": sum(r["seconds"] for r in rounds),
            "execution": federation.execution,
        }
        if divergence is not None:
            record["divergence"] = divergence
        else:
            record["final"] = seed_final(rounds[-1], clients)
            tracker.finish("ok", record["final"])
            _save_model(state, label, seed, out_dir)
            if examples_for:
                examples[label] = _examples(
                    fns, fed_data, state, federation, config.report.example_images
                )
        records[label] = record
        emit(
            {
                "event": "done",
                "algorithm": label,
                "seed": seed,
                "status": record["status"],
                **(record["final"] or {}),
            }
        )
    return records, examples


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    callback: Callback | None = None,
    resume: bool = False,
    overwrite: bool = False,
    extend: bool = False,
    seeds: int | Sequence[int] | None = None,
) -> dict:
    """Runs every algorithm of ``config`` on every seed; writes the outputs.

    Per seed, the data (split and synthetic generation), the initial model, the batches and
    the client sampling come from that seed; every algorithm of a seed starts from the same
    data and initial model. With a ``tune`` section, each algorithm's hyper-parameters are
    first searched on the validation split of the first seed's data (never its test split),
    and the choices run on every seed.

    Writes ``out_dir/results.json`` (schema in docs/experiments.md), ``summary.md``, PNG
    figures, ``tuning.json`` (with ``tune``), the final models
    (``models/<label>/seed-<s>.msgpack``), checkpoints (``checkpoints/<label>/seed-<s>/``)
    and TensorBoard event files (``tensorboard/<label>/seed-<s>/``), and returns the results
    dict. A run that diverges (:class:`~pppml_jax.federation.run.DivergenceError`) is
    recorded as diverged, and the others go on.

    With ``resume``, each (algorithm, seed) continues from its latest intact checkpoint (a
    finished one is not trained again) and the outputs equal an uninterrupted run's; ``extend``
    (with ``resume``) lets ``training.rounds`` grow, or adds seeds after the run's. A directory
    holding another run is refused unless ``overwrite``
    (:func:`~pppml_jax.experiments.fingerprint.prepare_run_dir`). ``seeds`` (a count from
    ``config.seed`` or a list) replaces the config's. ``callback`` receives progress events
    (dicts with "event": "data", "trial", "trial_done", "tuned", "resume", "start", "round",
    "diverged" or "done").
    """
    from pppml_jax.experiments.report import write_report

    if seeds is not None:
        config = config.with_seeds(seeds)
    out_dir = Path(out_dir)
    prepare_run_dir(out_dir, config, resume=resume, overwrite=overwrite, extend=extend)
    emit = callback or (lambda event: None)
    tracker = Tracker(out_dir, config.tracking, config.name)
    started = time.perf_counter()
    first = config.seeds[0]
    fed_data, model = _setup(config, first, emit)
    tuning = None
    if config.tune is not None:
        config, tuning = _tune(config, fed_data, model, first, out_dir, resume, emit)
    per_seed: dict[str, dict[int, dict]] = {label: {} for label in config.labels}
    examples: dict[str, list] = {}
    try:
        for seed in config.seeds:
            if seed != first:
                fed_data, model = _setup(config, seed, emit)
            records, shown = _run_seed(
                config, seed, fed_data, model, out_dir, resume, emit, tracker, seed == first
            )
            examples = examples or shown
            for label, record in records.items():
                per_seed[label][seed] = record
    finally:
        tracker.close()
    names = [c.name for c in fed_data.clients]
    results: dict[str, Any] = {
        "name": config.name,
        "task": fed_data.task,
        "metric": model[0].metric,
        "empty_masks": config.evaluation.empty_masks,
        "clients": [{"name": c.name, "profile": c.profile} for c in fed_data.clients],
        "config": config.to_dict(),
        "seeds": list(config.seeds),
        "runs": {label: combine(per_seed[label], names) for label in config.labels},
    }
    results["comparisons"] = compare(results["runs"], names)
    if tuning is not None:
        results["tuning"] = tuning
    results["seconds"] = time.perf_counter() - started
    (out_dir / "results.json").write_text(json.dumps(jsonable(results), indent=1))
    results["files"] = write_report(results, examples, out_dir)
    return results
