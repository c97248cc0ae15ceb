"""The ``tune`` search: every algorithm's trials trained on training data, scored on the
validation split only; the choice then runs on test over the seeds (``runner.py``).

Only the ``train`` and ``val`` splits of the federation are handed to the federations built
here: no test example is read (``tests/experiments/test_tuning.py`` replaces every test
example by NaN and gets the same scores and choice). A trial that diverges scores nothing and
is recorded as diverged; the best finite validation score wins (ties: the earlier trial).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from pppml_jax.experiments.config import ConfigError, ExperimentConfig
from pppml_jax.experiments.config_tune import with_values
from pppml_jax.experiments.jsonable import jsonable
from pppml_jax.experiments.tasks import TaskFunctions
from pppml_jax.federation.engine import Federation
from pppml_jax.federation.run import DivergenceError, iter_rounds

Emit = Callable[[dict], None]


def _trial(
    config: ExperimentConfig,
    label: str,
    values: Mapping[str, Any],
    data: Mapping[str, list],
    model: tuple[TaskFunctions, Any, Any],
    seed: int,
) -> dict[str, Any]:
    """Trains one setting on ``data["train"]`` and scores it on ``data["val"]``."""
    fns, params, model_state = model
    tune = config.tune
    fconfig = with_values(config, label, values).federation_config(label, seed=seed)
    rounds = tune.rounds or fconfig.rounds
    fconfig = fconfig.replace(rounds=rounds, eval_every=rounds)  # scored once, at the end
    if fns.batch_rng is not None and fconfig.batch_rng is None:
        fconfig = fconfig.replace(batch_rng=fns.batch_rng)
    federation = Federation(
        fns.loss,
        data["train"],
        fconfig,
        eval_fn=fns.per_example,
        test_clients=data["val"],  # the validation split in the evaluation's place
        stateful=fns.stateful,
    )
    start = federation.init(params, model_state)
    last = None
    steps = iter_rounds(federation, start, rounds, divergence_factor=config.divergence.factor)
    try:
        for _, last in steps:  # noqa: B007 - only the last record is scored
            pass
    except DivergenceError as err:
        return {"values": dict(values), "status": "diverged", "score": None, **_why(err)}
    key = f"per_client_{tune.metric}"
    per_client = last[key]
    score = float(np.nanmean(per_client)) if np.isfinite(per_client).any() else None
    return {"values": dict(values), "status": "ok", "score": score, "per_client": per_client}


def _why(err: DivergenceError) -> dict[str, Any]:
    return {"divergence": err.to_dict()}


def tune_experiment(
    config: ExperimentConfig,
    fed_data,
    model: tuple[TaskFunctions, Any, Any],
    *,
    seed: int,
    emit: Emit | None = None,
) -> tuple[ExperimentConfig, dict[str, Any]]:
    """Runs ``config.tune``'s trials for every algorithm on ``fed_data`` (data of ``seed``).

    Args:
      config: the experiment, with a ``tune`` section.
      fed_data: the federation (a :class:`~pppml_jax.data.FederatedDataset`); only its
        ``train`` and ``val`` splits are read.
      model: ``(task functions, initial params, initial model state)``.
      seed: the seed of the data and of the trials' training.
      emit: receives ``{"event": "trial", ...}`` progress events.

    Returns:
      ``(config with each algorithm's choice applied, the record for results.json)``: the
      record holds the search (``method``, ``budget``, ``rounds``, ``metric``, ``space``), the
      data seed, and per label every trial (values, validation score, status) and the choice.

    Raises:
      ConfigError: no client has validation data.
    """
    tune = config.tune
    emit = emit or (lambda event: None)
    data = {
        "train": [c.train for c in fed_data.clients],
        "val": [c.val for c in fed_data.clients],
    }
    if not any(len(v["image"]) for v in data["val"]):
        raise ConfigError(
            "tune: no client has validation data; set data.options.val_fraction > 0 (tuning "
            "never reads the test split)"
        )
    record: dict[str, Any] = {**tune.to_dict(), "data_seed": seed, "algorithms": {}}
    record["score"] = f"mean validation {tune.metric} metric over clients (higher is better)"
    tuned = config
    for label in config.labels:
        settings = tune.trials(label)
        trials = []
        for i, values in enumerate(settings):
            trial = _trial(config, label, values, data, model, seed)
            trials.append(trial)
            emit({"event": "trial", "algorithm": label, "trial": i + 1, "of": len(settings)})
            emit({"event": "trial_done", "algorithm": label, **trial})
        scored = [t for t in trials if t["score"] is not None]
        best = max(scored, key=lambda t: t["score"]) if scored else None  # first of ties
        entry = {
            "trials": trials,
            "choice": None if best is None else best["values"],
            "best_score": None if best is None else best["score"],
        }
        if settings and best is None:
            entry["note"] = "every trial diverged or scored nothing: the config's values run"
        if best is not None:
            tuned = with_values(tuned, label, best["values"])
        record["algorithms"][label] = entry
    return tuned, jsonable(record)


def apply_record(config: ExperimentConfig, record: Mapping[str, Any]) -> ExperimentConfig:
    """``config`` with the choices of a saved tuning ``record`` applied (for ``--resume``)."""
    for label, entry in record["algorithms"].items():
        if entry.get("choice"):
            config = with_values(config, label, entry["choice"])
    return config
