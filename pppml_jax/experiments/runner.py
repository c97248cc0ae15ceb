"""config -> data, model, federations -> results.json, summary.md and figures."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pppml_jax import models as model_zoo
from pppml_jax.experiments.config import ConfigError, ExperimentConfig
from pppml_jax.experiments.fingerprint import checkpoint_key, prepare_run_dir
from pppml_jax.experiments.jsonable import jsonable
from pppml_jax.experiments.tasks import TaskFunctions, task_functions
from pppml_jax.federation.checkpoint import Checkpointer
from pppml_jax.federation.engine import Federation
from pppml_jax.federation.placement import to_host
from pppml_jax.federation.run import iter_rounds
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


def _train(federation, state, algorithm, config, out_dir: Path, resume: bool, emit):
    """Runs the rounds of one algorithm, checkpointing; returns the final state and history."""
    fconfig = federation.config
    every = config.checkpoint.every
    checkpointer = None
    if every > 0:  # prepare_run_dir left no other run's checkpoints here
        directory = out_dir / "checkpoints" / algorithm
        checkpointer = Checkpointer(directory, keep=config.checkpoint.keep)
    fingerprint = checkpoint_key(config, algorithm)  # all but rounds: --extend may add some
    rounds: list[dict] = []
    if resume and checkpointer is not None:
        restored = checkpointer.restore_latest(state)
        if restored is not None:
            state, record = restored
            if record.get("fingerprint") != fingerprint:
                raise ConfigError(
                    f"the checkpoint of {algorithm} in {checkpointer.directory} was made with "
                    "another configuration; run without --resume to start again"
                )
            rounds = list(record["history"])
            emit({"event": "resume", "algorithm": algorithm, "round": state.round})
    emit(
        {
            "event": "start",
            "algorithm": algorithm,
            "rounds": fconfig.rounds,
            "execution": federation.execution,
            "from_round": state.round,
        }
    )
    steps = iter_rounds(federation, state, fconfig.rounds)
    for state, record in steps:  # the state after each round; unchanged if none is left
        rounds.append(jsonable(record))
        emit({"event": "round", "algorithm": algorithm, "of": fconfig.rounds, **record})
        done = record["round"]
        if checkpointer is not None and (done % every == 0 or done == fconfig.rounds):
            checkpointer.save(
                state, {"algorithm": algorithm, "fingerprint": fingerprint, "history": rounds}
            )
    return state, rounds


def _save_model(state, algorithm: str, out_dir: Path) -> None:
    """Writes the final model(s) as Flax msgpack: models/<algorithm>.msgpack."""
    from flax import serialization

    target = {
        "params": state.client_params if state.client_params is not None else state.params,
        "model_state": state.client_model_state
        if state.client_model_state is not None
        else state.model_state,
    }
    (out_dir / "models").mkdir(exist_ok=True)
    (out_dir / "models" / f"{algorithm}.msgpack").write_bytes(
        serialization.to_bytes(to_host(target))
    )


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    callback: Callback | None = None,
    resume: bool = False,
    overwrite: bool = False,
    extend: bool = False,
) -> dict:
    """Runs every algorithm of ``config`` on the same data and initial model; writes the outputs.

    Writes ``out_dir/results.json`` (schema in README.md), ``out_dir/summary.md``, PNG figures,
    the final models (``models/<algorithm>.msgpack``) and checkpoints (``checkpoints/``), and
    returns the results dict. With ``resume``, each algorithm continues from its latest intact
    checkpoint (a finished one is not trained again) and the outputs equal an uninterrupted
    run's; ``extend`` (with ``resume``) lets ``training.rounds`` grow and trains a finished run
    for the extra rounds. A directory holding another run is refused unless ``overwrite``
    (:func:`~pppml_jax.experiments.fingerprint.prepare_run_dir`). ``callback`` receives
    progress events (dicts with "event": "data", "resume",
    "start", "round" or "done").
    """
    from pppml_jax.experiments.report import write_report

    out_dir = Path(out_dir)
    prepare_run_dir(out_dir, config, resume=resume, overwrite=overwrite, extend=extend)
    emit = callback or (lambda event: None)
    seed = config.seed
    started = time.perf_counter()
    fed_data = load_data(config.data, seed=seed)
    emit(
        {
            "event": "data",
            "task": fed_data.task,
            "clients": [c.name for c in fed_data.clients],
            "n_train": [len(c.train["image"]) for c in fed_data.clients],
            "n_test": [len(c.test["image"]) for c in fed_data.clients],
            "seconds": time.perf_counter() - started,
        }
    )
    model = build_model(config.model, num_classes=fed_data.num_classes)
    sample = jnp.asarray(fed_data.clients[0].train["image"][:1])
    variables = model.init(jax.random.key(seed), sample, train=False)
    fns = task_functions(
        fed_data.task,
        model,
        variables,
        sample=sample,
        empty_masks=config.evaluation.empty_masks,
    )
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"} or None
    train = [c.train for c in fed_data.clients]
    test = [c.test for c in fed_data.clients]
    results: dict[str, Any] = {
        "name": config.name,
        "task": fed_data.task,
        "metric": fns.metric,
        "empty_masks": config.evaluation.empty_masks,
        "clients": [{"name": c.name, "profile": c.profile} for c in fed_data.clients],
        "config": config.to_dict(),
        "runs": {},
    }
    examples: dict[str, list] = {}
    for algorithm in config.labels:
        fconfig = config.federation_config(algorithm)
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
        state, rounds = _train(federation, state, algorithm, config, out_dir, resume, emit)
        last = rounds[-1]
        per_client = {
            c.name: {
                "global": last["per_client_global"][k],
                "personalized": last["per_client_personalized"][k],
                "n_train": len(c.train["image"]),
                "n_test": len(c.test["image"]),
            }
            for k, c in enumerate(fed_data.clients)
        }
        results["runs"][algorithm] = {
            "rounds": rounds,
            "final": {
                "mean_global": last["mean_global"],
                "mean_personalized": last["mean_personalized"],
                "per_client": per_client,
            },
            "seconds": sum(r["seconds"] for r in rounds),
            "execution": federation.execution,
        }
        _save_model(state, algorithm, out_dir)
        examples[algorithm] = _examples(
            fns, fed_data, state, federation, config.report.example_images
        )
        emit({"event": "done", "algorithm": algorithm, **results["runs"][algorithm]["final"]})
    results["seconds"] = time.perf_counter() - started
    (out_dir / "results.json").write_text(json.dumps(jsonable(results), indent=1))
    results["files"] = write_report(results, examples, out_dir)
    return results
