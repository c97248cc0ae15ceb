"""The paper's shipped configs run end to end on small files in their real formats.

configs/rad_chestct.yaml and configs/covid_seg.yaml need data that cannot be downloaded here;
these tests write a few volumes in each format (the builders' own test writers), point the
shipped config at them with ``--set`` and shrink only sizes and rounds, so the configs' data
options, model names and algorithms are the ones a user runs.
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))

from test_builder_covid_ct_seg import write_dataset as write_covid
from test_builder_rad_chestct import write_dataset as write_rad

from pppml_jax.cli.main import main

CONFIGS = Path(__file__).parents[2] / "configs"


def run_config(name, tmp_path, monkeypatch, overrides):
    monkeypatch.setenv("PPPML_DATA_DIR", str(tmp_path / "data_root"))
    monkeypatch.setenv("PPPML_COMPILATION_CACHE", "")
    out = tmp_path / "out"
    args = ["run", str(CONFIGS / name), "--out", str(out), "--quiet"]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 0
    return json.loads((out / "results.json").read_text()), out


SHRINK = ["training.rounds=1", "training.local_steps=1", "training.eval_every=1"]


def test_rad_chestct_config_runs_on_npz_volumes_and_a_split_csv(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    rows = write_rad(raw, per_client=4)
    results, out = run_config(
        "rad_chestct.yaml",
        tmp_path,
        monkeypatch,
        [
            f"data.options.manual_dir={raw}",
            f"data.options.split_csv={raw / 'split.csv'}",
            f"data.options.data_dir={tmp_path / 'tfds'}",
            "data.options.size=16",
            "model.name=DenseNet3DTiny",
            "training.batch_size=2",
            "algorithms=[perfedavg]",
            *SHRINK,
        ],
    )
    assert (results["name"], results["task"], results["metric"]) == (
        "rad_chestct",
        "classification",
        "accuracy",
    )
    assert [c["name"] for c in results["clients"]] == ["0", "1", "2"]
    assert [c["profile"]["slice_thickness"] for c in results["clients"]] == [1, 5, 10]
    per_client = results["runs"]["perfedavg"]["final"]["per_client"]
    for client in ("0", "1", "2"):
        counts = per_client[client]
        total = sum(1 for r in rows if r["client"] == client)
        assert counts["n_train"] + counts["n_test"] < total  # one patient is validation
        for key in ("global", "personalized"):
            accuracy = counts[key] * counts["n_test"]
            assert 0.0 <= counts[key] <= 1.0 and np.isclose(accuracy, round(accuracy))
    assert (out / "summary.md").exists() and (out / "per_client.png").exists()


def test_covid_seg_config_runs_on_nifti_volumes_and_a_manifest(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    write_covid(raw, patients=3)
    results, out = run_config(
        "covid_seg.yaml",
        tmp_path,
        monkeypatch,
        [
            f"data.options.manual_dir={raw}",
            f"data.options.data_dir={tmp_path / 'tfds'}",
            "data.options.size=16",
            "data.options.num_folds=3",
            "model.options={features: 4, levels: 2}",
            "training.batch_size=2",
            "algorithms=[fedavg]",
            *SHRINK,
        ],
    )
    assert (results["task"], results["metric"]) == ("segmentation", "dice")
    assert [c["name"] for c in results["clients"]] == ["dev_A", "dev_B"]
    per_client = results["runs"]["fedavg"]["final"]["per_client"]
    for client in ("dev_A", "dev_B"):
        # 3 patients of 6 axial slices, folds by patient: one patient each in train and test
        assert (per_client[client]["n_train"], per_client[client]["n_test"]) == (6, 6)
        assert 0.0 <= per_client[client]["global"] <= 1.0
    assert (out / "examples.png").exists()
