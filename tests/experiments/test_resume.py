"""One output directory, one run: fingerprints, --resume, --extend, --overwrite, corrupt manifests.

The directory rules are tested on configs alone (nothing is trained); one tiny federation
(two clients' worth of 32x32 slices, a 2-level U-Net, one local step) checks that extending a
finished run by a round gives exactly the run trained for that many rounds from the start.
"""

import json

import pytest

from pppml_jax.experiments.config import ConfigError, validate
from pppml_jax.experiments.fingerprint import differences, fingerprint, prepare_run_dir

BASE = {
    "name": "tiny",
    "seed": 1,
    "data": {
        "name": "synthetic_chest_ct",
        "options": {"task": "segmentation", "profiles": "quickstart", "image_size": 32},
    },
    "model": {"name": "UNet2D", "options": {"features": 4, "levels": 2, "norm": "group"}},
    "training": {"rounds": 2, "local_steps": 1, "batch_size": 4, "lr": 0.01, "eval_every": 1},
    "algorithms": ["fedavg"],
    "checkpoint": {"every": 1},
    "report": {"example_images": 0},
}


def config(**changes):
    raw = json.loads(json.dumps(BASE))
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = raw
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return validate(raw)


def test_the_fingerprint_covers_data_model_algorithms_secure_and_version(monkeypatch):
    base = fingerprint(config())
    assert base.sha256 == fingerprint(config()).sha256
    assert fingerprint(config(name="other", report__example_images=3)).sha256 == base.sha256
    cases = {
        "data.options.profiles": config(data__options__profiles="paper_thickness"),
        "model.options.features": config(model__options__features=8),
        "seeds": config(seed=2),
        "divergence.factor": config(divergence={"factor": 10.0}),
        "algorithms.fedavg.training.lr": config(training__lr=0.02),
        "algorithms.fedavg.training.secure": config(training__secure={"backend": "plain"}),
    }
    for key, other in cases.items():
        assert differences(base.content, fingerprint(other).content) == [key]
    import pppml_jax

    monkeypatch.setattr(pppml_jax, "__version__", "99.0")
    assert differences(base.content, fingerprint(config()).content) == ["package_version"]


def test_resume_refuses_another_run_naming_the_keys(tmp_path):
    prepare_run_dir(tmp_path / "run", config())
    changed = config(data__options__profiles="paper_thickness", model__options__features=8)
    with pytest.raises(ConfigError, match=r"data\.options\.profiles, model\.options\.features"):
        prepare_run_dir(tmp_path / "run", changed, resume=True)
    prepare_run_dir(tmp_path / "run", config(), resume=True)  # the same run: accepted


def test_more_rounds_need_extend_and_fewer_are_refused(tmp_path):
    out = tmp_path / "run"
    prepare_run_dir(out, config())
    with pytest.raises(ConfigError, match=r"training\.rounds.*add --extend"):
        prepare_run_dir(out, config(training__rounds=3), resume=True)
    with pytest.raises(ConfigError, match="use it with --resume"):
        prepare_run_dir(out, config(training__rounds=3), extend=True)
    with pytest.raises(ConfigError, match="would shrink from 2 to 1"):
        prepare_run_dir(out, config(training__rounds=1), resume=True, extend=True)
    with pytest.raises(ConfigError, match=r"training\.lr differs, and only training\.rounds"):
        prepare_run_dir(out, config(training__rounds=3, training__lr=0.5), resume=True, extend=True)
    prepare_run_dir(out, config(training__rounds=3), resume=True, extend=True)
    saved = json.loads((out / "fingerprint.json").read_text())
    assert saved["content"]["algorithms"]["fedavg"]["training"]["rounds"] == 3


def test_a_used_out_needs_resume_or_overwrite_and_a_file_is_refused(tmp_path):
    out = tmp_path / "run"
    prepare_run_dir(out, config())
    (out / "models").mkdir()
    (out / "models" / "old.msgpack").write_bytes(b"old")
    (out / "results.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"is not empty.*--resume.*--overwrite"):
        prepare_run_dir(out, config(seed=5))
    assert (out / "models" / "old.msgpack").exists()  # nothing deleted without --overwrite
    with pytest.raises(ConfigError, match="choose one"):
        prepare_run_dir(out, config(), resume=True, overwrite=True)
    prepare_run_dir(out, config(seed=5), overwrite=True)
    assert not (out / "models").exists() and not (out / "results.json").exists()
    assert (out / "notes.txt").read_text() == "mine"  # not a run output: kept
    assert json.loads((out / "fingerprint.json").read_text())["content"]["seeds"] == [5]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        prepare_run_dir(a_file, config())
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("x")
    with pytest.raises(ConfigError, match=r"no fingerprint\.json"):
        prepare_run_dir(foreign, config(), resume=True)


def test_cli_refuses_a_file_and_a_used_out_without_traceback(tmp_path, capsys):
    import yaml

    from pppml_jax.cli.main import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["run", str(path), "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err
    used = tmp_path / "used"
    used.mkdir()
    (used / "results.json").write_text("{}")
    assert main(["run", str(path), "--out", str(used)]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "Traceback" not in err
    assert (used / "results.json").read_text() == "{}"


def test_a_manifest_of_random_bytes_is_reported_not_raised(tmp_path):
    from pppml_jax.federation.checkpoint import MANIFEST, Checkpointer

    checkpointer = Checkpointer(tmp_path / "ck")
    for step, content in ((1, b"\xff\xfe\x00garbage\x9c"), (2, b"[1, 2]"), (3, b"7")):
        (tmp_path / "ck" / str(step)).mkdir(parents=True)
        (tmp_path / "ck" / str(step) / MANIFEST).write_bytes(content)
        assert checkpointer.verify(step).startswith("unreadable manifest")


@pytest.mark.slow
def test_extending_a_finished_run_equals_training_longer(tmp_path):
    from pppml_jax.experiments.runner import run_experiment

    def strip(rounds):
        return [{k: v for k, v in r.items() if "seconds" not in k} for r in rounds]

    short = run_experiment(config(), tmp_path / "a")
    assert [r["round"] for r in short["runs"]["fedavg"]["rounds"]] == [1, 2]
    (tmp_path / "a" / "checkpoints" / "fedavg" / "seed-1" / "2" / "manifest.json").write_bytes(
        b"\x80\x81"
    )
    with pytest.warns(UserWarning, match="unreadable manifest"):  # falls back to round 1
        extended = run_experiment(
            config(training__rounds=3), tmp_path / "a", resume=True, extend=True
        )
    direct = run_experiment(config(training__rounds=3), tmp_path / "b")
    assert strip(extended["runs"]["fedavg"]["rounds"]) == strip(direct["runs"]["fedavg"]["rounds"])
    model = "models/fedavg/seed-1.msgpack"
    assert (tmp_path / "a" / model).read_bytes() == (tmp_path / "b" / model).read_bytes()


def test_extend_adds_seeds_after_the_runs_own(tmp_path):
    out = tmp_path / "run"
    prepare_run_dir(out, config(seeds=2))  # seeds 1, 2
    with pytest.raises(ConfigError, match=r"seeds differs|add --extend"):
        prepare_run_dir(out, config(seeds=3), resume=True)
    with pytest.raises(ConfigError, match=r"do not start with the run's seeds \[1, 2\]"):
        prepare_run_dir(out, config(seeds=[1, 5]), resume=True, extend=True)
    prepare_run_dir(out, config(seeds=3), resume=True, extend=True)
    saved = json.loads((out / "fingerprint.json").read_text())
    assert saved["content"]["seeds"] == [1, 2, 3]


def test_checkpoint_keys_differ_by_seed_and_ignore_the_other_seeds():
    from pppml_jax.experiments.fingerprint import checkpoint_key

    two, three = config(seeds=2), config(seeds=3)
    assert checkpoint_key(two, "fedavg", 1) != checkpoint_key(two, "fedavg", 2)
    assert checkpoint_key(two, "fedavg", 2) == checkpoint_key(three, "fedavg", 2)
    assert checkpoint_key(config(), "fedavg") == checkpoint_key(three, "fedavg", 1)
