"""``pppml attack``: an end-to-end run of a shrunken config writes metrics, table and figures."""

from __future__ import annotations

import json

import pytest
import yaml

from pppml_jax.cli.main import main

SMALL = {
    "attack": {"steps": 600},
    "data": {"crop_size": 16, "synthetic": {"image_size": 32}},
    "reference": {"datasets": ["synthetic"], "images": 2},
    "local_update": {"images": 1, "local_steps": 2},
    "views": {"trials": 1, "backend": "plain"},
    "noise_floor": {"draws": 8},
}


def _strict_json(text):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.slow
def test_attack_command_writes_metrics_table_and_grids(tmp_path, capsys):
    config = tmp_path / "attack.yaml"
    config.write_text(yaml.safe_dump(SMALL))
    out = tmp_path / "out"
    code = main(["attack", str(config), "--out", str(out), "--set", "seed=3", "--quiet"])
    assert code == 0
    results = _strict_json((out / "metrics.json").read_text())
    assert results["config"]["seed"] == 3
    assert results["config"]["attack"]["restarts"] >= 1  # defaults filled in
    ref = results["reference"]["synthetic"]
    assert len(ref["images"]) == 2 and ref["summary"]["label_accuracy"] == 1.0
    assert len(results["local_update"]["images"]) == 1
    views = results["views"]
    coalitions = {"relay_plus_hospital", "colluding_neighbours"}
    assert set(views["summary"]) == {
        "plain", "relay", "next_client", "aggregate", "aggregate_minus_own", "two_party_leak",
        *coalitions, *(f"{v}_no_pairwise" for v in coalitions),
    }  # fmt: skip
    assert views["collusion"]["clients"] == 4 and views["collusion"]["threshold"] == 3
    assert views["collusion"]["coalitions"] == {
        "relay_plus_hospital": [1], "colluding_neighbours": [3, 1]
    }  # fmt: skip
    assert views["trials"][0]["clipped"] == 0
    records = views["trials"][0]["records"]
    for view in ("relay", "next_client", *coalitions):  # nothing beats the floor by 3 dB
        assert records[view]["psnr"] <= records[view]["floor_psnr"] + 3.0, view
    for view in coalitions:  # without pairwise masks the coalition holds the gradient itself
        assert records[f"{view}_no_pairwise"]["label_correct"], view
        assert records[f"{view}_no_pairwise"]["psnr"] > records[view]["floor_psnr"] + 10.0
    assert len(results["table"]) == 1 + 1 + 10
    assert results["seconds"]["total"] > 0
    for name in ("views.png", "reference.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "table.md").read_text()
    assert table.count("\n") == 2 + 12 and "ring of 2" in table
    assert "two neighbours, pairwise masks off" in table
    assert "wrote metrics.json" in capsys.readouterr().out


def test_bad_config_is_reported_not_raised(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("attack: {stepz: 3}\n")
    assert main(["attack", str(config), "--out", str(tmp_path / "o")]) == 2
    assert "attack.stepz" in capsys.readouterr().err
    assert main(["attack", str(tmp_path / "missing.yaml")]) == 2
