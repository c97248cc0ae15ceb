"""``pppml bench secure``: secure-aggregation throughput per backend, as a table (or JSON).

Each configuration runs in a fresh child process (``python -m pppml_jax.cli.bench --one``),
so that its peak memory is its own and a slow or crashing backend cannot take the others down.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from pppml_jax.secure.benchmark import UNET_PARAMS, Config

LABELS = ("plain", "bfv", "ckks", "paper-ckks", "concrete")
DEFAULT_PARAMS = (10_000, 100_000, UNET_PARAMS)
DEFAULT_CLIENTS = (3, 10)
GOAL_BYTES_PER_PARAM = 20.0
GOAL_SPEEDUP = 4.0
GOAL_CONCRETE_SECONDS = 60.0
GOAL_CONCRETE_MB = 8192.0


def _params(text: str) -> int:
    """Parses a parameter count: an integer, ``1.94M``-style, or ``unet``."""
    t = text.strip().lower()
    if t in ("unet", "1.94m"):
        return UNET_PARAMS
    scale = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    try:
        value = float(t[:-1]) if scale > 1 else float(t)
    except ValueError as err:
        msg = f"--params {text!r}: an integer, 10k, 1.5M or unet"
        raise argparse.ArgumentTypeError(msg) from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"--params {text!r}: must be at least 1")
    return int(value * scale)


def add_secure_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``pppml bench secure`` (shared with the benchmark script)."""
    parser.add_argument(
        "--backend",
        nargs="+",
        choices=LABELS,
        default=list(LABELS),
        help="backends to measure; paper-ckks is the published CKKS setting, one ciphertext "
        "vector per layer (default: all)",
    )
    parser.add_argument(
        "--params",
        nargs="+",
        type=_params,
        default=list(DEFAULT_PARAMS),
        help="update sizes: integers, 10k / 1.5M, or 'unet' (1,944,049) (default: 10k 100k unet)",
    )
    parser.add_argument(
        "--clients", nargs="+", type=int, default=list(DEFAULT_CLIENTS), help="ring sizes"
    )
    parser.add_argument(
        "--concrete-sweep",
        nargs="*",
        type=_params,
        default=[],
        help="also run concrete fully encrypted at these sizes with the largest --clients, "
        "stopping after the first that misses 60 s",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic updates")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds allowed per configuration"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object last")


def register(subparsers: Any) -> None:
    """Adds ``bench`` with its ``secure`` sub-command to the ``pppml`` parser."""
    bench = subparsers.add_parser("bench", help="benchmarks (secure aggregation throughput)")
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCH")
    secure = sub.add_parser(
        "secure",
        help="seconds, bytes per parameter and error of secure aggregation per backend",
        description="Runs one aggregation round per backend, update size and ring size on "
        "synthetic U-Net-shaped updates, and prints a table.",
    )
    add_secure_arguments(secure)
    secure.set_defaults(func=run_secure)
    bench.set_defaults(func=lambda args: (bench.print_help(), 2)[1])


def plan(args: argparse.Namespace) -> list[Config]:
    """The configurations to run, in order."""
    configs = []
    for n in args.clients:
        for p in args.params:
            for label in args.backend:
                if label == "paper-ckks":
                    opts = {"preset": "paper", "layout": "per_leaf"}
                    configs.append(Config(label, "ckks", p, n, opts))
                elif label == "ckks":
                    configs.append(Config(label, "ckks", p, n, {"preset": "lean"}))
                else:
                    configs.append(Config(label, label, p, n, {}))
    if args.concrete_sweep:
        n = max(args.clients)
        for p in args.concrete_sweep:
            configs.append(Config("concrete-full", "concrete", p, n, {"encrypt": None}))
    return configs


def run_isolated(config: Config, *, seed: int, timeout: float) -> dict[str, Any]:
    """Measures one configuration in a child process; errors become a row with ``error``."""
    cmd = [sys.executable, "-m", "pppml_jax.cli.bench", "--one", json.dumps(config.as_dict())]
    cmd += ["--seed", str(seed)]
    row = config.as_dict()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        row["error"] = f"timeout after {timeout:.0f} s"
        return row
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        row["error"] = f"exit {proc.returncode}: {tail[0][:200]}"
        return row
    return json.loads(lines[-1])


def evaluate_goals(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Checks the issue's goals against measured rows (``None`` when not measured)."""
    ok = [r for r in rows if "error" not in r]

    def find(label: str, p: int, n: int) -> dict[str, Any] | None:
        match = (r for r in ok if (r["label"], r["num_params"], r["num_clients"]) == (label, p, n))
        return next(match, None)

    bfv, paper = find("bfv", UNET_PARAMS, 10), find("paper-ckks", UNET_PARAMS, 10)
    goals: dict[str, Any] = {
        "exact_bytes_per_param": None,
        "exact_speedup_vs_paper": None,
        "concrete_largest_within_60s_8gb": None,
    }
    if bfv:
        goals["exact_bytes_per_param"] = {
            "value": bfv["bytes_per_param"],
            "goal": f"<= {GOAL_BYTES_PER_PARAM}",
            "met": bfv["bytes_per_param"] <= GOAL_BYTES_PER_PARAM,
        }
    if bfv and paper:
        speedup = paper["total_s"] / bfv["total_s"]
        goals["exact_speedup_vs_paper"] = {
            "value": speedup,
            "goal": f">= {GOAL_SPEEDUP}",
            "met": speedup >= GOAL_SPEEDUP,
        }
    within = [
        r
        for r in ok
        if r["backend"] == "concrete"
        and r["total_s"] <= GOAL_CONCRETE_SECONDS
        and r["peak_rss_mb"] <= GOAL_CONCRETE_MB
    ]
    if within:
        best_full = max(
            (r for r in within if r["encrypted_params"] == r["num_params"]),
            key=lambda r: (r["num_params"], r["num_clients"]),
            default=None,
        )
        best_any = max(within, key=lambda r: (r["num_params"], r["num_clients"]))
        goals["concrete_largest_within_60s_8gb"] = {
            "fully_encrypted": None
            if best_full is None
            else {k: best_full[k] for k in ("num_params", "num_clients", "total_s", "peak_rss_mb")},
            "selective": {
                k: best_any[k]
                for k in ("num_params", "encrypted_params", "num_clients", "total_s", "peak_rss_mb")
            },
        }
    return goals


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of measured rows."""
    head = (
        f"{'backend':<15}{'params':>10}{'n':>4}{'encrypted':>11}{'keygen s':>10}"
        f"{'enc s/cl':>10}{'hop s':>8}{'dec s':>8}{'total s':>9}{'B/param':>9}"
        f"{'max err':>10}{'bound':>10}{'peak MB':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        left = f"{r['label']:<15}{r['num_params']:>10}{r['num_clients']:>4}"
        if "error" in r:
            lines.append(f"{left}  {r['error']}")
            continue
        lines.append(
            f"{left}{r['encrypted_params']:>11}{r['keygen_s']:>10.2f}{r['encrypt_s']:>10.3f}"
            f"{r['hop_s']:>8.3f}{r['decrypt_s']:>8.3f}{r['total_s']:>9.2f}"
            f"{r['bytes_per_param']:>9.2f}{r['max_error']:>10.2e}{r['error_bound']:>10.2e}"
            f"{r['peak_rss_mb']:>9.0f}"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Where and when the numbers were taken."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load,
        "python": platform.python_version(),
    }


def run_secure(args: argparse.Namespace) -> int:
    """Runs the planned configurations with a progress bar; prints the table (and JSON)."""
    from tqdm import tqdm

    configs = plan(args)
    info = machine()
    rows = []
    bar = tqdm(configs, desc="secure aggregation", unit="config", file=sys.stderr)
    stop_sweep = False
    for config in bar:
        bar.set_postfix_str(f"{config.label} {config.num_params} x {config.num_clients}")
        if config.label == "concrete-full" and stop_sweep:
            continue
        row = run_isolated(config, seed=args.seed, timeout=args.timeout)
        rows.append(row)
        if config.label == "concrete-full" and row.get("total_s", 1e9) > GOAL_CONCRETE_SECONDS:
            stop_sweep = True
    bar.close()
    goals = evaluate_goals(rows)
    print(format_table(rows))
    for name, goal in goals.items():
        print(f"{name}: {'not measured' if goal is None else json.dumps(goal)}")
    if args.json:
        print(json.dumps({"machine": info, "rows": rows, "goals": goals}))
    failed = [r for r in rows if "error" in r]
    return 1 if failed and len(failed) == len(rows) else 0


def _one(argv: Sequence[str]) -> int:
    """Child-process entry: measures one configuration and prints it as JSON."""
    import warnings

    from pppml_jax.secure.benchmark import measure

    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    spec = json.loads(args.one)
    config = Config(
        spec["label"], spec["backend"], spec["num_params"], spec["num_clients"], spec["options"]
    )
    print(json.dumps(measure(config, seed=args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(_one(sys.argv[1:]))
