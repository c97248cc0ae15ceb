"""Tuning on validation only: every trial and the choice are recorded, the choice runs on
the seeds, and test data is never read (NaN test examples change nothing)."""

import dataclasses
import json

import numpy as np
import pytest

from pppml_jax.experiments.config import ConfigError, validate
from pppml_jax.experiments.runner import _setup, run_experiment
from pppml_jax.experiments.tuning import tune_experiment

TINY = {
    "name": "tiny",
    "seed": 2,
    "data": {
        "name": "synthetic_chest_ct",
        "options": {"task": "segmentation", "profiles": "quickstart", "image_size": 16},
    },
    "model": {"name": "UNet2D", "options": {"features": 4, "levels": 2, "norm": "group"}},
    "training": {"rounds": 2, "local_steps": 1, "batch_size": 4, "lr": 0.01, "eval_every": 1},
    "algorithms": ["fedavg", {"name": "fedprox", "mu": 0.1}],
    "tune": {
        "budget": 3,
        "rounds": 1,
        "space": {"fedavg": {"lr": [0.001, 0.03, 0.3]}, "fedprox": {"mu": [0.0, 0.01, 1.0]}},
    },
    "checkpoint": {"every": 0},
    "report": {"example_images": 0},
    "tracking": {"tensorboard": False},
}


def nan_test(fed_data):
    """The federation with every test example replaced by NaN (and its labels by garbage)."""
    clients = []
    for client in fed_data.clients:
        test = {
            k: np.full_like(v, np.nan if v.dtype.kind == "f" else 7) for k, v in client.test.items()
        }
        clients.append(dataclasses.replace(client, test=test))
    return dataclasses.replace(fed_data, clients=tuple(clients))


FEDAVG = {**TINY, "algorithms": ["fedavg"]}
FEDAVG["tune"] = {**TINY["tune"], "space": {"fedavg": {"lr": [0.001, 0.03, 0.3]}}}


def test_nan_test_data_leaves_every_score_and_the_choice_unchanged():
    config = validate(FEDAVG)
    fed_data, model = _setup(config, 2, lambda event: None)
    tuned, record = tune_experiment(config, fed_data, model, seed=2)
    poisoned = nan_test(fed_data)
    assert np.isnan(poisoned.clients[0].test["image"]).all()
    tuned_nan, record_nan = tune_experiment(config, poisoned, model, seed=2)
    assert record_nan == record  # every validation score, bit for bit
    assert tuned_nan == tuned
    fedavg = record["algorithms"]["fedavg"]
    assert [t["values"] for t in fedavg["trials"]] == [{"lr": 0.001}, {"lr": 0.03}, {"lr": 0.3}]
    assert all(t["status"] == "ok" and 0 <= t["score"] <= 1 for t in fedavg["trials"])
    best = max(fedavg["trials"], key=lambda t: t["score"])
    assert fedavg["choice"] == best["values"] and fedavg["best_score"] == best["score"]
    assert tuned.federation_config("fedavg").lr == fedavg["choice"]["lr"]
    assert record["space"] == {"fedavg": {"lr": [0.001, 0.03, 0.3]}} and record["budget"] == 3
    json.dumps(record)


def test_a_choice_sets_federation_fields_and_algorithm_options():
    from pppml_jax.experiments.config_tune import with_values

    config = with_values(validate(TINY), "fedprox", {"mu": 1.0, "lr": 0.3})
    assert config.algorithm("fedprox").options == {"mu": 1.0}
    assert config.federation_config("fedprox").lr == 0.3
    assert config.federation_config("fedavg").lr == 0.01


def test_tuning_without_validation_data_is_refused():
    config = validate(TINY)
    fed_data, model = _setup(config, 2, lambda event: None)
    clients = tuple(
        dataclasses.replace(c, val={k: v[:0] for k, v in c.val.items()}) for c in fed_data.clients
    )
    with pytest.raises(ConfigError, match="no client has validation data"):
        tune_experiment(config, dataclasses.replace(fed_data, clients=clients), model, seed=2)


def test_the_runner_records_the_search_and_runs_the_choice(tmp_path):
    results = run_experiment(validate(FEDAVG), tmp_path / "out")
    choice = results["tuning"]["algorithms"]["fedavg"]["choice"]
    assert results["config"]["overrides"]["fedavg"]["lr"] == choice["lr"]
    saved = json.loads((tmp_path / "out" / "tuning.json").read_text())
    assert saved == results["tuning"]
    assert "Tuned on validation only" in (tmp_path / "out" / "summary.md").read_text()


def test_the_search_space_is_checked_when_loading():
    bad = {**TINY, "tune": {**TINY["tune"], "space": {"fedavg": {"lr": [0.1, 0.2, 0.3]}}}}
    with pytest.raises(ConfigError, match=r"tune.space lacks fedprox"):
        validate(bad)
    grid = {**TINY, "tune": {**TINY["tune"], "budget": 2}}
    with pytest.raises(ConfigError, match=r"grid has 3 points but tune.budget is 2"):
        validate(grid)
    steps = {**TINY, "overrides": {"fedavg": {"local_steps": 3}}}
    with pytest.raises(ConfigError, match=r"overrides.fedavg.local_steps: with tune"):
        validate(steps)
    random = {
        **TINY,
        "tune": {
            **TINY["tune"],
            "method": "random",
            "space": {
                "fedavg": {"lr": {"low": 0.001, "high": 0.1, "log": True}},
                "fedprox": {"mu": [0.0, 1.0]},
            },
        },
    }
    config = validate(random)
    draws = config.tune.trials("fedavg")
    assert len(draws) == 3 and all(0.001 <= d["lr"] <= 0.1 for d in draws)
    assert draws == validate(random).tune.trials("fedavg")  # deterministic
