"""``pppml bench secure``: secure-aggregation throughput per backend, as a table (or JSON).

Each configuration runs in a fresh child process (``python -m pppml_jax.cli.bench --one``),
so that its peak memory is its own and a slow or crashing backend cannot take the others down.
The measurement itself is the public :func:`pppml_jax.secure.measure`; the update's leaf shapes
come from the paper's model, ``pj.models.UNet2D`` (1,942,594 parameters), read with
:func:`pppml_jax.secure.measure.model_leaf_shapes` (the secure package never imports models,
so the model's initialiser is passed in from here).

Size: about 450 lines, over the project's 400: argument checking that answers every bad
number in one line, the child-process driver and the table writer of one sub-command.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from pppml_jax.secure import MeasureConfig

LABELS = ("plain", "bfv", "ckks", "paper-ckks", "concrete")
PAIRWISE_BACKENDS = ("plain", "bfv")
"""Backends whose ciphertexts carry pairwise masks (exact sums modulo M)."""
UNET = "unet"
DEFAULT_PARAMS = ("10k", "100k", UNET)
DEFAULT_CLIENTS = (3, 10)
MAX_CLIENTS = 64
"""Largest ring the benchmark accepts (the bfv and concrete backends' default max_parties)."""
GOAL_BYTES_PER_PARAM = 20.0
GOAL_SPEEDUP = 4.0
GOAL_CONCRETE_SECONDS = 60.0
GOAL_CONCRETE_MB = 8192.0
GOAL_PAIRWISE_RATIO = 1.5

LeafShapes = list[tuple[str, tuple[int, ...]]]


@functools.cache
def unet_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``(name, shape)`` of ``pj.models.UNet2D()``'s parameters (defaults: the paper's U-Net)."""
    import jax
    import jax.numpy as jnp

    from pppml_jax.models import UNet2D
    from pppml_jax.secure.measure import model_leaf_shapes

    model = UNet2D()
    x = jnp.zeros((1, 16, 16, 3), jnp.float32)

    def init():  # the trainable leaves, named params/... as in a federation's updates
        return {"params": model.init(jax.random.key(0), x, train=False)["params"]}

    return tuple(model_leaf_shapes(init))


def scaled_shapes(base: Sequence[tuple[str, tuple[int, ...]]], num_params: int) -> LeafShapes:
    """``base``'s leaves resized (1-D) so that they hold ``num_params`` values in all."""
    total = sum(math.prod(s) for _, s in base)
    sizes = [max(1, round(math.prod(s) * num_params / total)) for _, s in base]
    sizes[max(range(len(sizes)), key=sizes.__getitem__)] += num_params - sum(sizes)
    return [(name, (size,)) for (name, _), size in zip(base, sizes, strict=True)]


def shapes_for(params: int | str) -> LeafShapes:
    """Leaf shapes of ``params`` values: the U-Net itself (``"unet"``) or its leaves scaled."""
    base = list(unet_shapes())
    return base if params == UNET else scaled_shapes(base, int(params))


def _count(text: str, what: str) -> int:
    """An integer count, ``10k`` / ``1.5M`` style allowed; ValueError with a one-line reason."""
    t = str(text).strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    try:
        value = float(t[:-1]) if scale > 1 else float(t)
    except ValueError:
        raise ValueError(f"{what} {text!r}: not a number (an integer, 10k or 1.5M)") from None
    if not math.isfinite(value) or value != int(value * scale) / scale:
        raise ValueError(f"{what} {text!r}: a whole number")
    return int(value * scale)


def _params(text: str) -> int | str:
    """A parameter count (``10k``, ``1.5M``) or ``unet``."""
    if str(text).strip().lower() in (UNET, "1.94m"):
        return UNET
    value = _count(text, "--params")
    if value < 1:
        raise ValueError(f"--params {text}: an update needs at least 1 value")
    return value


def _clients(text: str) -> int:
    value = _count(text, "--clients")
    if not 3 <= value <= MAX_CLIENTS:
        raise ValueError(
            f"--clients {text}: a ring needs 3 to {MAX_CLIENTS} hospitals (fewer than 3 would "
            "let one hospital read the other's update)"
        )
    return value


def check_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with every number parsed and checked (idempotent).

    Raises:
      ValueError: the first bad value, with a one-line reason naming the option.
    """
    out = argparse.Namespace(**vars(args))
    out.params = [_params(p) for p in args.params]
    out.clients = [_clients(c) for c in args.clients]
    out.concrete_sweep = [_params(p) for p in args.concrete_sweep]
    if UNET in out.concrete_sweep:
        raise ValueError("--concrete-sweep unet: fully encrypting the U-Net is out of reach")
    seed = _count(args.seed, "--seed")
    if seed < 0:
        raise ValueError(f"--seed {args.seed}: a non-negative integer")
    out.seed = seed
    try:
        timeout = float(args.timeout)
    except ValueError:
        raise ValueError(f"--timeout {args.timeout!r}: not a number of seconds") from None
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"--timeout {args.timeout}: a positive number of seconds")
    out.timeout = timeout
    return out


def add_secure_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``pppml bench secure`` (shared with the benchmark script).

    Numbers are checked by :func:`check_arguments`; every error, argparse's own included, is
    one line on stderr (exit status 2), never a usage block or a traceback.
    """

    def error(message: str):
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)

    parser.error = error  # type: ignore[method-assign]
    parser.set_defaults(bench_prog=parser.prog)
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
        default=list(DEFAULT_PARAMS),
        help="update sizes: integers, 10k / 1.5M, or 'unet' (pj.models.UNet2D's 1,942,594 "
        "parameters, its own leaf shapes; other sizes scale those leaves) "
        "(default: 10k 100k unet)",
    )
    parser.add_argument(
        "--clients",
        nargs="+",
        default=list(DEFAULT_CLIENTS),
        help=f"ring sizes, 3 to {MAX_CLIENTS} (default: 3 10)",
    )
    parser.add_argument(
        "--pairwise",
        nargs="+",
        choices=("on", "off"),
        default=None,
        help="pairwise masks on, off, or both ('on off'); only plain and bfv can carry them "
        "(default: each backend's default, on for plain and bfv)",
    )
    parser.add_argument(
        "--concrete-sweep",
        nargs="*",
        default=[],
        help="also run concrete fully encrypted at these sizes with the largest --clients, "
        "stopping after the first that misses 60 s",
    )
    parser.add_argument("--seed", default="0", help="seed of the synthetic updates")
    parser.add_argument("--timeout", default="1800", help="seconds allowed per configuration")
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


def plan(args: argparse.Namespace) -> list[MeasureConfig]:
    """The configurations to run, in order (arguments checked by :func:`check_arguments`)."""
    args = check_arguments(args)
    pairwise: list[bool | None] = [None]
    if args.pairwise:
        pairwise = [v == "on" for v in dict.fromkeys(args.pairwise)]
    configs = []
    for n in args.clients:
        for p in args.params:
            shapes = shapes_for(p)
            for label in args.backend:
                if label == "paper-ckks":
                    backend, opts = "ckks", {"preset": "paper", "layout": "per_leaf"}
                elif label == "ckks":
                    backend, opts = "ckks", {"preset": "lean"}
                else:
                    backend, opts = label, {}
                for pw in pairwise:
                    extra = {} if pw is None else {"pairwise": pw}
                    configs.append(MeasureConfig(label, backend, shapes, n, {**opts, **extra}))
    if args.concrete_sweep:
        n = max(args.clients)
        for p in args.concrete_sweep:
            configs.append(
                MeasureConfig("concrete-full", "concrete", shapes_for(p), n, {"encrypt": None})
            )
    return configs


def _spec(config: MeasureConfig) -> dict[str, Any]:
    """A configuration as JSON-able data (the child process rebuilds it)."""
    return {
        "label": config.label,
        "backend": config.backend,
        "shapes": [[name, list(shape)] for name, shape in config.shapes],
        "num_clients": config.num_clients,
        "options": dict(config.options),
    }


def _config(spec: dict[str, Any]) -> MeasureConfig:
    shapes = [(name, tuple(shape)) for name, shape in spec["shapes"]]
    return MeasureConfig(
        spec["label"], spec["backend"], shapes, spec["num_clients"], spec["options"]
    )


def _row(config: MeasureConfig) -> dict[str, Any]:
    return {
        "label": config.label,
        "backend": config.backend,
        "num_params": config.num_params,
        "num_clients": config.num_clients,
        "options": dict(config.options),
    }


def run_isolated(config: MeasureConfig, *, seed: int, timeout: float) -> dict[str, Any]:
    """Measures one configuration in a child process; errors become a row with ``error``."""
    row = _row(config)
    if config.options.get("pairwise") and config.backend not in PAIRWISE_BACKENDS:
        row["error"] = f"skipped: {config.backend} ciphertexts cannot carry pairwise masks"
        return row
    cmd = [sys.executable, "-m", "pppml_jax.cli.bench", "--one", json.dumps(_spec(config))]
    cmd += ["--seed", str(seed)]
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


def unet_params() -> int:
    """Parameters of ``pj.models.UNet2D()`` (1,942,594)."""
    return int(sum(math.prod(s) for _, s in unet_shapes()))


def evaluate_goals(rows: Sequence[dict[str, Any]], *, big: int | None = None) -> dict[str, Any]:
    """Checks the issues' goals against measured rows (``None`` when not measured).

    Args:
      rows: measured rows (rows with ``error`` are ignored).
      big: the headline update size (default: the U-Net's parameter count).
    """
    ok = [r for r in rows if "error" not in r]
    big = unet_params() if big is None else big

    def find(label: str, p: int, n: int, pairwise: bool | None = None) -> dict[str, Any] | None:
        match = [
            r
            for r in ok
            if (r["label"], r["num_params"], r["num_clients"]) == (label, p, n)
            and (pairwise is None or bool(r.get("pairwise")) == pairwise)
        ]
        # the backend's default (pairwise on where it can) before an explicit 'off'
        match.sort(key=lambda r: r.get("options", {}).get("pairwise", True) is False)
        return match[0] if match else None

    bfv, paper = find("bfv", big, 10), find("paper-ckks", big, 10)
    goals: dict[str, Any] = {
        "exact_bytes_per_param": None,
        "exact_speedup_vs_paper": None,
        "concrete_largest_within_60s_8gb": None,
        "pairwise_cost_within_1_5x": None,
    }
    on, off = find("bfv", big, 10, True), find("bfv", big, 10, False)
    if on and off:
        time_ratio = on["total_s"] / off["total_s"]
        bytes_ratio = on["wire_mb"] / off["wire_mb"]
        goals["pairwise_cost_within_1_5x"] = {
            "time_ratio": time_ratio,
            "bytes_ratio": bytes_ratio,
            "goal": f"<= {GOAL_PAIRWISE_RATIO}",
            "met": max(time_ratio, bytes_ratio) <= GOAL_PAIRWISE_RATIO,
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
        f"{'backend':<15}{'params':>10}{'n':>4}{'pw':>4}{'encrypted':>11}{'keygen s':>10}"
        f"{'enc s/cl':>10}{'hop s':>8}{'dec s':>8}{'total s':>9}{'B/param':>9}"
        f"{'max err':>10}{'bound':>10}{'peak MB':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        left = f"{r['label']:<15}{r['num_params']:>10}{r['num_clients']:>4}"
        if "error" in r:
            lines.append(f"{left}  {r['error']}")
            continue
        pw = "on" if r.get("pairwise") else "off"
        lines.append(
            f"{left}{pw:>4}{r['encrypted_params']:>11}{r['keygen_s']:>10.2f}{r['encrypt_s']:>10.3f}"
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

    try:
        args = check_arguments(args)
    except ValueError as err:
        prog = getattr(args, "bench_prog", "pppml bench secure")
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
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

    from pppml_jax.secure import measure

    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(measure(_config(json.loads(args.one)), seed=args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(_one(sys.argv[1:]))
