"""The benchmark plumbing: the U-Net's shapes from the model, one measurement, goals, CLI
parsing and its one-line errors, JSON output."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import pppml_jax as pj
from pppml_jax.cli import bench
from pppml_jax.cli.main import main
from pppml_jax.secure.tree import first_and_last_layers

ROOT = Path(__file__).resolve().parents[2]
UNET = 1_942_594  # pj.models.UNet2D() (docs/method.md 2.2)


def test_unet_shapes_come_from_the_model_and_sort_in_network_order():
    shapes = bench.shapes_for("unet")
    assert sum(math.prod(s) for _, s in shapes) == bench.unet_params() == UNET
    names = [n for n, _ in shapes]
    marks = first_and_last_layers(names, [s for _, s in shapes])
    chosen = [n for n, c in zip(names, marks, strict=True) if c]
    # the 3 -> 16 input convolution and the 16 -> 2 output head (466 values, docs)
    assert chosen == ["params/ConvBlock_0/Conv_0/kernel", "params/Conv_0/bias",
                      "params/Conv_0/kernel"]  # fmt: skip
    assert sum(math.prod(dict(shapes)[n]) for n in chosen) == 466


@pytest.mark.parametrize("n", [10_000, 123_457])
def test_scaled_shapes_have_the_requested_size(n):
    assert sum(math.prod(s) for _, s in bench.shapes_for(n)) == n


def test_measure_reports_consistent_numbers():
    shapes = bench.shapes_for(3000)
    row = pj.secure.measure(pj.secure.MeasureConfig("plain", "plain", shapes, 3))
    assert row["num_params"] == 3000
    assert row["max_error"] <= row["error_bound"]
    assert row["encrypted_params"] == 0 and row["pairwise"] is True  # the default
    assert row["bytes_per_param"] == pytest.approx(4.0, rel=0.05)  # uint32 + envelope
    assert row["total_s"] >= row["hop_s"] > 0


def _parse(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    bench.register(sub)
    return parser.parse_args(argv)


def test_cli_parses_and_plans():
    args = _parse(["bench", "secure", "--backend", "bfv", "paper-ckks", "--params", "10k", "unet"])
    assert args.func is bench.run_secure
    configs = bench.plan(args)
    assert [(c.label, c.num_params, c.num_clients) for c in configs] == [
        ("bfv", 10_000, 3),
        ("paper-ckks", 10_000, 3),
        ("bfv", UNET, 3),
        ("paper-ckks", UNET, 3),
        ("bfv", 10_000, 10),
        ("paper-ckks", 10_000, 10),
        ("bfv", UNET, 10),
        ("paper-ckks", UNET, 10),
    ]
    assert configs[1].options == {"preset": "paper", "layout": "per_leaf"}
    assert list(configs[2].shapes) == list(bench.unet_shapes())


def test_pairwise_on_and_off_plan_two_rows_per_configuration():
    args = _parse(["bench", "secure", "--backend", "bfv", "ckks", "--params", "500",
                   "--clients", "10", "--pairwise", "on", "off"])  # fmt: skip
    configs = bench.plan(args)
    assert [(c.label, c.options.get("pairwise")) for c in configs] == [
        ("bfv", True), ("bfv", False), ("ckks", True), ("ckks", False)
    ]  # fmt: skip
    skipped = bench.run_isolated(configs[2], seed=0, timeout=5)
    assert skipped["error"] == "skipped: ckks ciphertexts cannot carry pairwise masks"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--clients", "-3"], "--clients -3: a ring needs 3 to 64 hospitals"),
        (["--clients", "2"], "--clients 2: a ring needs 3 to 64 hospitals"),
        (["--clients", "1000"], "--clients 1000: a ring needs 3 to 64 hospitals"),
        (["--clients", "3.5"], "--clients '3.5': a whole number"),
        (["--clients", "ten"], "--clients 'ten': not a number"),
        (["--params", "0"], "--params 0: an update needs at least 1 value"),
        (["--params=-5k"], "--params -5k: an update needs at least 1 value"),
        (["--params", "-5k"], "argument --params: expected at least one argument"),
        (["--backend", "rsa"], "argument --backend: invalid choice: 'rsa'"),
        (["--params", "lots"], "--params 'lots': not a number"),
        (["--seed", "-1"], "--seed -1: a non-negative integer"),
        (["--timeout", "0"], "--timeout 0: a positive number of seconds"),
        (["--timeout", "nan"], "--timeout nan: a positive number of seconds"),
        (["--concrete-sweep", "unet"], "--concrete-sweep unet: fully encrypting"),
    ],
)
def test_bad_numbers_give_one_line_errors(argv, message, capsys):
    try:
        code = main(["bench", "secure", "--backend", "plain", *argv])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err  # no usage block, no traceback
    assert lines[0].startswith("pppml bench secure: error: " + message), lines[0]


def test_goals_are_judged_from_rows():
    def row(label, backend, p, n, total, bpp, enc=None, rss=100.0):
        return {
            "label": label, "backend": backend, "num_params": p, "num_clients": n,
            "total_s": total, "bytes_per_param": bpp, "peak_rss_mb": rss,
            "encrypted_params": p if enc is None else enc,
        }  # fmt: skip

    u = UNET
    rows = [
        row("bfv", "bfv", u, 10, 10.0, 13.6),
        row("paper-ckks", "ckks", u, 10, 35.0, 131.0),
        row("concrete", "concrete", 10_000, 10, 50.0, 6000.0),
        row("concrete", "concrete", u, 10, 20.0, 5.0, enc=465),
        row("concrete-full", "concrete", 40_000, 10, 200.0, 6000.0),
    ]
    goals = bench.evaluate_goals(rows)
    assert goals["exact_bytes_per_param"]["met"] is True
    assert goals["exact_speedup_vs_paper"] == {"value": 3.5, "goal": ">= 4.0", "met": False}
    largest = goals["concrete_largest_within_60s_8gb"]
    assert largest["fully_encrypted"]["num_params"] == 10_000
    assert largest["selective"]["encrypted_params"] == 465
    assert goals["pairwise_cost_within_1_5x"] is None  # not measured
    assert bench.evaluate_goals([])["exact_bytes_per_param"] is None
    on = {**row("bfv", "bfv", u, 10, 12.0, 13.6), "pairwise": True, "wire_mb": 272.0}
    off = {**row("bfv", "bfv", u, 10, 10.0, 13.6), "pairwise": False, "wire_mb": 271.9}
    off["options"] = {"pairwise": False}
    pw = bench.evaluate_goals([off, on])["pairwise_cost_within_1_5x"]
    assert pw["time_ratio"] == pytest.approx(1.2) and pw["met"] is True


def test_benchmark_script_prints_json_last():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "secure_aggregation.py")]
    cmd += ["--backend", "bfv", "--params", "500", "--clients", "3", "--concrete-sweep",
            "--pairwise", "on", "off", "--json"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    on, off = result["rows"]
    assert (on["label"], on["pairwise"], off["pairwise"]) == ("bfv", True, False)
    assert on["max_error"] <= on["error_bound"] and off["max_error"] <= off["error_bound"]
    table = out.stdout.split("\n")
    assert table[2].split()[:4] == ["bfv", "500", "3", "on"]  # the table's first row
    assert table[3].split()[:4] == ["bfv", "500", "3", "off"]


def test_bad_numbers_in_the_benchmark_script_give_one_line_errors():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "secure_aggregation.py"), "--clients", "-3"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "secure_aggregation.py: error: --clients -3: a ring needs 3 to 64 hospitals (fewer than 3 "
        "would let one hospital read the other's update)"
    ]
