"""Round time of this engine against another checkout of pppml-jax, alternating processes.

Runs ``benchmarks/client_throughput.py`` (FedAvg, SmallCNN, the default loop execution on
CPU) with this tree's package and with a reference tree's, one process after the other,
``--trials`` times, and reports the median round time of each and their ratio. Make the
reference with ``git worktree add /tmp/ref <commit>``:

    python benchmarks/engine_overhead.py --reference /tmp/ref --clients 32 --json

With ``--json`` the last line is one JSON object ``{"current_s", "reference_s", "ratio", ...}``
(ratio = current / reference; below 1.05 means within 5%).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import emit_json, machine, median  # noqa: E402


def one(tree: Path, clients: int, repeats: int) -> float:
    """Median loop-execution round time of ``tree``'s package, in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [
        sys.executable,
        str(HERE / "client_throughput.py"),
        "--clients",
        str(clients),
        "--repeats",
        str(repeats),
        "--json",
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=tree)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["loop_s"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="another checkout")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not (args.reference / "pppml_jax").is_dir():
        parser.error(f"--reference {args.reference} holds no pppml_jax package")
    current, reference = [], []
    for trial in range(args.trials):
        reference.append(one(args.reference, args.clients, args.repeats))
        current.append(one(HERE.parent, args.clients, args.repeats))
        print(f"trial {trial}: reference {reference[-1]:.3f} s, current {current[-1]:.3f} s")
    result = {
        "clients": args.clients,
        "current_s": median(current),
        "reference_s": median(reference),
        "ratio": median(current) / median(reference),
        "current_trials": current,
        "reference_trials": reference,
        "machine": machine(),
    }
    print(
        f"median round: current {result['current_s']:.3f} s, reference "
        f"{result['reference_s']:.3f} s, ratio {result['ratio']:.3f}"
    )
    if args.json:
        emit_json(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
