"""benchmarks/experiments_report.py on a tiny real run, and the benchmark configs load."""

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import benchmark_runs  # noqa: E402
import experiments_report  # noqa: E402

from pppml_jax.data.devices import resolve_profiles  # noqa: E402
from pppml_jax.experiments.config import load_config  # noqa: E402
from pppml_jax.experiments.runner import run_experiment  # noqa: E402

TINY = [
    "seeds=2",
    "training.rounds=1",
    "training.local_steps=1",
    "training.eval_every=1",
    "data.options.image_size=16",
    "data.options.slices_per_patient=2",
    "model.name=UNet2DTiny",
    "model.options={}",
    "algorithms=[fedavg, {name: perfedavg, label: perfedavg-fo}, {name: pppml, label: pppml}]",
    "overrides={fedavg: {personalize_steps: 0}, pppml: {secure: {backend: plain}}}",
    "tune={budget: 1, rounds: 1, space: {fedavg: {lr: [0.01]}, perfedavg-fo: {}, pppml: {}}}",
    "tracking.tensorboard=false",
    "checkpoint.every=0",
]


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "benchmark").glob("*.yaml")))
def test_benchmark_configs_load(path):
    config = load_config(path)
    assert len(config.seeds) >= 3
    if config.tune is not None:  # the same budget and local updates for every algorithm
        assert len(config.seeds) >= 5 and set(config.tune.space) == set(config.labels)
        steps = {config.federation_config(label).local_steps for label in config.labels}
        assert len(steps) == 1


def test_sweeps_are_valid_overrides():
    runs = benchmark_runs.planned_runs(Path("out"), [])
    sweeps = [r for r in runs if r["group"] == "sweeps"]
    assert len(sweeps) == len(benchmark_runs.EXAMPLES) + len(benchmark_runs.SHIFTS)
    for run in sweeps:
        config = load_config(ROOT / run["config"], run["sets"])
        resolve_profiles(config.data.options["profiles"])
    ideal = resolve_profiles(benchmark_runs.shift_profiles(0.0))
    assert len({(p.slice_thickness, p.noise_hu, p.hu_offset, p.sharpen) for p in ideal}) == 1


def test_archive_keeps_a_consistent_pair(tmp_path):
    run = {"name": "sweep_shift/strength-0", "out": str(tmp_path / "runs" / "strength-0")}
    out, archive = Path(run["out"]), tmp_path / "archive"
    dest = archive / "sweep_shift" / "strength-0"
    out.mkdir(parents=True)
    (out / "results.json").write_text('{"seeds": [0]}')
    (out / "run.json").write_text('{"returncode": 0, "started": "day 1"}')
    benchmark_runs.archive_run(run, archive, 0)
    assert json.loads((dest / "results.json").read_text()) == {"seeds": [0]}
    # a later run that fails (a stale results.json may stay in its folder): the pair stays
    (out / "results.json").write_text('{"stale": true}')
    (out / "run.json").write_text('{"returncode": 1, "started": "day 2"}')
    benchmark_runs.archive_run(run, archive, 1)
    assert json.loads((dest / "results.json").read_text()) == {"seeds": [0]}
    assert json.loads((dest / "run.json").read_text())["started"] == "day 1"
    assert json.loads((dest / "failed-run.json").read_text())["returncode"] == 1
    # and a good run replaces the pair and clears the failure
    (out / "results.json").write_text('{"seeds": [0, 1]}')
    (out / "run.json").write_text('{"returncode": 0, "started": "day 3"}')
    benchmark_runs.archive_run(run, archive, 0)
    assert json.loads((dest / "run.json").read_text())["started"] == "day 3"
    assert not (dest / "failed-run.json").exists()


@pytest.mark.slow  # a real run: compiles 3 algorithms (about 30 s on 2 idle cores)
def test_report_from_a_tiny_run(tmp_path):
    plan = benchmark_runs.planned_runs(tmp_path, [])
    out = tmp_path / "seg_ct_small"
    config = load_config(ROOT / "configs/benchmark/seg_ct_small.yaml", TINY)
    run_experiment(config, out)
    (out / "run.json").write_text(
        json.dumps(
            {
                "command": "pppml run tiny",
                "machine": "x86_64",
                "cpus": 2,
                "system": "Linux",
                "accelerator": "cpu",
                "started": "2026-12-02",
                "wall_seconds": 12.0,
            }
        )
    )
    # the same results stand in for two points of the examples sweep: table and figure
    sweep = [r for r in plan if r["group"] == "sweeps" and r["sweep"]["name"] == "examples"]
    for run in sweep[:2]:
        shutil.copytree(out, run["out"])
    figures = tmp_path / "figures"
    text = experiments_report.report(tmp_path, figures, relative_to=tmp_path)
    assert (figures / "sweep_examples.png").stat().st_size > 1000
    assert "![examples sweep](figures/sweep_examples.png)" in text
    assert not (figures / "sweep_shift.png").exists()  # no shift point has run
    values = sorted(r["sweep"]["value"] for r in sweep[:2])
    assert f"| {values[0]} | " in text and f"| {values[1]} | " in text
    assert "### seg_ct_small" in text and "`pppml run tiny`" in text and "2026-12-02" in text
    assert "| perfedavg-fo |" in text and "MB |" in text  # the ring's bytes per round
    assert "pppml − Per-FedAvg (fo), personalized" in text
    assert "personalized Per-FedAvg (fo) − FedAvg's global model" in text
    # every other planned run is listed as not run, with its command
    for run in plan:
        if run["name"] != "seg_ct_small" and run not in sweep[:2]:
            assert f"- {run['name']} (" in text
    assert text.count("Not run yet") >= 2
