"""The divergence guard: ``pj.federation.run`` stops a run whose loss blows up or stops being
finite with a DivergenceError naming algorithm, seed and round; the experiment runner records
the run as diverged and goes on with the others."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import pppml_jax.experiments.runner as runner
from pppml_jax.experiments.config import validate
from pppml_jax.federation.run import DivergenceError, RoundError, run


def quadratic(w, batch):
    return jnp.mean((batch["x"] @ w) ** 2)


CLIENTS = [{"x": np.ones((4, 2), np.float32)}, {"x": np.ones((6, 2), np.float32)}]
OPTIONS = {"rounds": 6, "local_steps": 1, "batch_size": 2, "local_optimizer": "sgd"}


def test_a_growing_loss_stops_the_run_naming_algorithm_seed_and_round():
    # s = w1 + w2 <- (1 - 4 lr) s = -39 s a step: the loss s^2 grows 1521x a round
    with pytest.raises(DivergenceError) as caught:
        run(quadratic, jnp.ones(2), CLIENTS, algorithm="fedavg", lr=10.0, seed=7, **OPTIONS)
    err = caught.value
    assert isinstance(err, RoundError)
    assert (err.algorithm, err.seed, err.round) == ("fedavg", 7, 2)
    assert "fedavg (seed 7) diverged in round 2" in str(err) and "1000x" in str(err)
    assert err.loss > 1e3 * err.first_loss
    facts = err.to_dict()
    assert facts["round"] == 2 and json.dumps(facts)


def test_the_factor_is_an_option_and_none_keeps_only_the_finite_check():
    # lr 0.6: s <- -1.4 s, the loss grows 1.96x a round: 14.8x (> 10) at round 5, < 1e3 at 6
    with pytest.raises(DivergenceError, match=r"round 5.*10x"):
        run(quadratic, jnp.ones(2), CLIENTS, lr=0.6, divergence_factor=10.0, **OPTIONS)
    assert len(run(quadratic, jnp.ones(2), CLIENTS, lr=0.6, **OPTIONS).rounds) == 6
    with pytest.raises(DivergenceError, match=r"non-finite|not finite"):
        run(
            quadratic,
            jnp.ones(2),
            CLIENTS,
            lr=10.0,
            divergence_factor=None,
            **{**OPTIONS, "rounds": 40},
        )
    hist = run(quadratic, jnp.ones(2), CLIENTS, lr=0.01, **OPTIONS)  # converging: untouched
    assert len(hist.rounds) == 6
    with pytest.raises(ValueError, match="divergence_factor"):
        run(quadratic, jnp.ones(2), CLIENTS, lr=0.01, divergence_factor=0.5, **OPTIONS)


TINY = {
    "name": "tiny",
    "seeds": 2,
    "data": {
        "name": "synthetic_chest_ct",
        "options": {"task": "segmentation", "profiles": "quickstart", "image_size": 16},
    },
    "model": {"name": "UNet2D", "options": {"features": 4, "levels": 2, "norm": "group"}},
    "training": {"rounds": 2, "local_steps": 1, "batch_size": 4, "lr": 0.01, "eval_every": 1},
    "algorithms": ["fedavg", "local"],
    "checkpoint": {"every": 0},
    "report": {"example_images": 0},
    "tracking": {"tensorboard": False},
}


def test_the_runner_records_a_diverged_run_and_continues(tmp_path, monkeypatch):
    real = runner.iter_rounds

    def blow_up(federation, state, last, **kw):  # fedavg on seed 1 diverges in round 2
        for after, record in real(federation, state, last, **kw):
            config = federation.config
            if config.seed == 1 and record["round"] == 2 and config.algorithm == "fedavg":
                raise DivergenceError(
                    "fedavg (seed 1) diverged in round 2: test",
                    algorithm="fedavg",
                    seed=1,
                    round=2,
                    loss=float("inf"),
                    first_loss=1.0,
                )
            yield after, record

    monkeypatch.setattr(runner, "iter_rounds", blow_up)
    events = []
    results = runner.run_experiment(validate(TINY), tmp_path / "out", callback=events.append)
    fedavg = results["runs"]["fedavg"]
    assert fedavg["diverged"] == [1] and fedavg["stats"]["mean_global"]["n"] == 1
    seed1 = fedavg["per_seed"]["1"]
    assert seed1["status"] == "diverged" and seed1["final"] is None
    assert seed1["divergence"]["round"] == 2 and seed1["divergence"]["loss"] is None
    assert fedavg["final"]["mean_global"] == fedavg["per_seed"]["0"]["final"]["mean_global"]
    assert results["runs"]["local"]["diverged"] == []  # the others went on
    assert results["runs"]["local"]["stats"]["mean_global"]["n"] == 2
    assert any(e["event"] == "diverged" and e["seed"] == 1 for e in events)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["runs"]["fedavg"]["per_seed"]["1"]["status"] == "diverged"
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "fedavg, seed 1: diverged" in summary
