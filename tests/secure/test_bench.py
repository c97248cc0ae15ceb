"""The benchmark plumbing: synthetic updates, one measurement, goals, CLI parsing, JSON output."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from pppml_jax.cli import bench
from pppml_jax.secure import benchmark
from pppml_jax.secure.tree import first_and_last_layers

ROOT = Path(__file__).resolve().parents[2]


def test_unet_shapes_match_the_paper_and_sort_in_network_order():
    shapes = benchmark.synthetic_shapes(benchmark.UNET_PARAMS)
    assert sum(math.prod(s) for _, s in shapes) == benchmark.UNET_PARAMS
    names = [n for n, _ in shapes]
    marks = first_and_last_layers(names, [s for _, s in shapes])
    chosen = [n for n, c in zip(names, marks, strict=True) if c]
    # the 3 -> 16 input convolution and the 16 -> 1 output convolution
    assert [dict(shapes)[n] for n in chosen] == [(3, 3, 3, 16), (16,), (1, 1, 16, 1), (1,)]


@pytest.mark.parametrize("n", [10_000, 123_457])
def test_scaled_shapes_have_the_requested_size(n):
    assert sum(math.prod(s) for _, s in benchmark.synthetic_shapes(n)) == n


def test_measure_reports_consistent_numbers():
    row = benchmark.measure(benchmark.Config("plain", "plain", 3000, 3))
    assert row["max_error"] <= row["error_bound"]
    assert row["encrypted_params"] == 0
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
        ("bfv", benchmark.UNET_PARAMS, 3),
        ("paper-ckks", benchmark.UNET_PARAMS, 3),
        ("bfv", 10_000, 10),
        ("paper-ckks", 10_000, 10),
        ("bfv", benchmark.UNET_PARAMS, 10),
        ("paper-ckks", benchmark.UNET_PARAMS, 10),
    ]
    assert configs[1].options == {"preset": "paper", "layout": "per_leaf"}
    with pytest.raises(SystemExit):
        _parse(["bench", "secure", "--params", "lots"])


def test_goals_are_judged_from_rows():
    def row(label, backend, p, n, total, bpp, enc=None, rss=100.0):
        return {
            "label": label, "backend": backend, "num_params": p, "num_clients": n,
            "total_s": total, "bytes_per_param": bpp, "peak_rss_mb": rss,
            "encrypted_params": p if enc is None else enc,
        }  # fmt: skip

    u = benchmark.UNET_PARAMS
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
    assert bench.evaluate_goals([])["exact_bytes_per_param"] is None


def test_benchmark_script_prints_json_last():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "secure_aggregation.py")]
    cmd += ["--backend", "bfv", "--params", "500", "--clients", "3", "--concrete-sweep", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    (r,) = result["rows"]
    assert r["label"] == "bfv" and r["max_error"] <= r["error_bound"]
    assert "bfv" in out.stdout.split("\n")[2]  # the table's first row
