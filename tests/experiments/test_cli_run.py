"""`pppml run` end to end on a shrunken config over two seeds: outputs, intervals, TensorBoard
event files, determinism, kill and --resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

CONFIG = {
    "name": "tiny",
    "seed": 3,
    "seeds": 2,
    "data": {
        "name": "synthetic_chest_ct",
        "options": {"task": "segmentation", "profiles": "quickstart", "image_size": 32},
    },
    "model": {"name": "UNet2D", "options": {"features": 8, "levels": 2, "norm": "group"}},
    "training": {
        "rounds": 6,
        "local_steps": 2,
        "batch_size": 4,
        "lr": 0.01,
        "alpha": 0.03,
        "beta": 0.01,
        "local_optimizer": "adam",
        "eval_every": 2,
    },
    "algorithms": ["fedavg", "pppml"],
    "overrides": {"pppml": {"secure": {"backend": "plain"}}},
    "checkpoint": {"every": 1},
}
TIMING_KEYS = {"seconds", "eval_seconds"}


def pppml(args, cache: Path, **kw):
    env = {**os.environ, "PPPML_COMPILATION_CACHE": str(cache)}
    env.pop("XLA_FLAGS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "pppml_jax.cli.main", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def without_timings(obj):
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    cache = root / "xla-cache"
    whole = root / "whole"
    proc = pppml(["run", str(config), "--out", str(whole)], cache)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    return root, config, cache, whole, out


def test_run_writes_the_documented_outputs(setup):
    _, _, _, whole, out = setup
    results = json.loads((whole / "results.json").read_text())
    assert results["task"] == "segmentation" and results["metric"] == "dice"
    assert set(results["runs"]) == {"fedavg", "pppml"}
    assert results["seeds"] == [3, 4]
    for run in results["runs"].values():
        assert [r["round"] for r in run["rounds"]] == list(range(1, 7))
        assert run["seeds"] == [3, 4] and run["diverged"] == []
        assert set(run["per_seed"]) == {"3", "4"}
        stats = run["stats"]["mean_personalized"]
        assert stats["n"] == 2 and stats["ci"][0] <= stats["mean"] <= stats["ci"][1]
        assert stats["mean"] == pytest.approx(run["final"]["mean_personalized"])
        per_seed = [run["per_seed"][s]["final"]["mean_personalized"] for s in ("3", "4")]
        assert stats["mean"] == pytest.approx(sum(per_seed) / 2)
        assert all("seconds" in r for r in run["rounds"])
        final = run["final"]
        assert 0.0 <= final["mean_personalized"] <= 1.0
        assert len(final["per_client"]) == 4
        for client in final["per_client"].values():
            assert {"global", "personalized", "n_train", "n_test"} <= set(client)
    assert results["runs"]["pppml"]["rounds"][0]["secure"]["participants"] == [0, 1, 2, 3]
    for name in ("summary.md", "metric_per_round.png", "per_client.png", "examples.png"):
        assert (whole / name).stat().st_size > 0
    assert (whole / "models" / "pppml" / "seed-4.msgpack").stat().st_size > 0
    assert {(c["a"], c["b"], c["metric"]) for c in results["comparisons"]} == {
        ("fedavg", "pppml", "global"),
        ("fedavg", "pppml", "personalized"),
    }
    events = list((whole / "tensorboard" / "pppml" / "seed-4").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert "round   6/6" in out and "| **mean** |" in out and " ± " in out


def test_killed_run_resumes_to_the_same_results(setup):
    root, config, cache, whole, _ = setup
    out_dir = root / "killed"
    proc = pppml(["run", str(config), "--out", str(out_dir)], cache)
    target = out_dir / "checkpoints" / "pppml" / "seed-3"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        steps = [p for p in target.glob("*") if p.name.isdigit()] if target.exists() else []
        if any(int(p.name) >= 3 for p in steps):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    resumed = pppml(["run", str(config), "--out", str(out_dir), "--resume"], cache)
    out, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, out
    assert "pppml (seed 3): resuming after round" in out
    assert "fedavg (seed 3): resuming after round 6" in out
    a = json.loads((whole / "results.json").read_text())
    b = json.loads((out_dir / "results.json").read_text())
    assert without_timings(a["runs"]) == without_timings(b["runs"])
    for name in ("fedavg", "pppml"):
        model = Path("models") / name / "seed-4.msgpack"
        assert (whole / model).read_bytes() == (out_dir / model).read_bytes()


def test_resume_refuses_a_changed_config(setup):
    _, config, cache, whole, _ = setup
    proc = pppml(
        ["run", str(config), "--out", str(whole), "--resume", "--set", "training.lr=0.02"], cache
    )
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 2
    assert "another configuration" in out


def test_bad_config_gives_a_clear_error(setup):
    root, _, cache, _, _ = setup
    bad = root / "bad.yaml"
    bad.write_text(yaml.safe_dump({**CONFIG, "training": {"rounds": 2, "learning_rate": 0.1}}))
    proc = pppml(["run", str(bad), "--out", str(root / "bad")], cache)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert "learning_rate" in out and "Traceback" not in out
