"""Clients per second against chunk size, number of devices and sampled clients.

A federation of --clients simulated clients (default 10,000; SmallCNN, --examples images of
28x28 each, held on the host), --sampled clients per round (default 100), FedAvg with 5 local
SGD steps of batch 16. Only the sampled clients' data goes to the device, chunk by chunk.

Every configuration runs in its own process, so that its peak resident memory is its own and
the number of (forced CPU) devices can differ:

    python benchmarks/scaling.py                       # chunk sizes, devices, sampled counts
    python benchmarks/scaling.py --quick --json        # a small smoke run

What forced CPU devices can and cannot show: ``--xla_force_host_platform_device_count=N``
splits the same 2 cores into N XLA devices. It proves that the sharded program runs and gives
the single-device result, and it measures the overhead of splitting, but it cannot show a
speed-up: there is no more hardware. On GPUs and TPUs each device is real hardware
(benchmarks/gpu/README.md).

With ``--json`` the last line is one JSON object ``{"results": [...], "machine": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(args) -> dict:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    sys.path.insert(0, str(HERE))
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from _common import median, peak_rss_mb

    from pppml_jax.federation import ClientBlock, Federation, FederationConfig
    from pppml_jax.models import SmallCNN

    rng = np.random.default_rng(0)
    k, n = args.clients, args.examples
    counts = rng.integers(n // 2, n + 1, size=k).astype(np.int32)  # unequal clients
    images = rng.standard_normal((k, n, 28, 28, 1), dtype=np.float32)
    labels = rng.integers(0, 10, size=(k, n)).astype(np.int32)
    block = ClientBlock({"image": images, "label": labels}, counts)
    data_mb = (images.nbytes + labels.nbytes) / 2**20
    rss_data = peak_rss_mb()

    model = SmallCNN(features=(16, 32), hidden=96, num_classes=10)
    params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]

    def loss_fn(p, batch):
        logits = model.apply({"params": p}, batch["image"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    from pppml_jax.algorithms import make_algorithm

    spec = json.loads(args.algorithm) if args.algorithm.startswith("{") else args.algorithm
    config = FederationConfig(
        algorithm=make_algorithm(spec),
        local_steps=5,
        batch_size=16,
        lr=0.05,
        clients_per_round=args.sampled,
        execution=args.execution,
        chunk_size=args.chunk,
        data_placement="host",
        seed=0,
    )
    fed = Federation(loss_fn, block, config)
    state = fed.init(params)
    start = time.perf_counter()
    state, _ = fed.round(state)
    first = time.perf_counter() - start
    seconds = []
    for _ in range(args.rounds):
        state, info = fed.round(state)
        seconds.append(info.seconds)
    round_s = median(seconds)
    return {
        "clients": k,
        "sampled": args.sampled,
        "chunk": fed.chunk_size if args.execution == "vmap" else 1,
        "devices": len(jax.devices()),
        "execution": args.execution,
        "algorithm": config.algorithm.name,
        "round_s": round_s,
        "clients_per_s": args.sampled / round_s,
        "first_round_s": first,
        "data_mb": data_mb,
        "rss_after_data_mb": rss_data,
        "peak_rss_mb": peak_rss_mb(),
        "train_rss_mb": peak_rss_mb() - rss_data,
        "rounds": args.rounds,
        "finite": bool(np.isfinite(info.train_loss)),
    }


def spawn(**kw) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    for key, value in kw.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--sampled", type=int, default=100)
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--execution", default="vmap")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--algorithm", default="fedavg", help="a built-in algorithm's name")
    parser.add_argument(
        "--stateful",
        action="store_true",
        help="fedavg against algorithms with per-client state (local, ditto, scaffold, apfl)",
    )
    parser.add_argument("--quick", action="store_true", help="1,000 clients, few settings")
    parser.add_argument("--gpu", action="store_true", help="one real device: chunks and sampled")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    sys.path.insert(0, str(HERE))
    clients = 1_000 if args.quick else args.clients
    base = {"clients": clients, "examples": args.examples, "rounds": args.rounds}
    if args.stateful:
        plan = [
            {"execution": "loop", "sampled": args.sampled, "algorithm": a}
            for a in ("fedavg", "local", '{"name": "ditto", "lam": 0.1}', "scaffold", "apfl")
        ]
        return _run_plan(plan, base, args)
    if args.gpu:
        plan = [{"execution": "loop", "sampled": 100}]
        plan += [
            {"execution": "vmap", "sampled": s, "chunk": c}
            for s in (100, 1000)
            for c in sorted({100, s})
        ]
        return _run_plan(plan, base, args)
    plan = [{"execution": "loop", "sampled": args.sampled}]
    chunks = [10, 100] if args.quick else [10, 25, 50, 100]
    plan += [{"execution": "vmap", "sampled": args.sampled, "chunk": c} for c in chunks]
    devices = [2] if args.quick else [2, 4, 8]
    plan += [
        {"execution": "vmap", "sampled": args.sampled, "chunk": args.sampled, "devices": d}
        for d in devices
    ]
    if not args.quick:
        plan += [{"execution": "loop", "sampled": s} for s in (25, 400)]
    return _run_plan(plan, base, args)


def _run_plan(plan, base, args) -> int:
    from _common import emit_json, machine

    results = []
    print(
        f"{'algorithm':>9} {'execution':>9} {'devices':>7} {'chunk':>5} {'sampled':>7} "
        f"{'s/round':>8} {'clients/s':>9} {'peak RSS MiB':>12} {'train RSS MiB':>13}"
    )
    for item in plan:
        r = spawn(**base, **item)
        results.append(r)
        print(
            f"{r['algorithm']:>9} {r['execution']:>9} {r['devices']:>7} {r['chunk']:>5} "
            f"{r['sampled']:>7} {r['round_s']:>8.2f} {r['clients_per_s']:>9.1f} "
            f"{r['peak_rss_mb']:>12.0f} "
            f"{r['train_rss_mb']:>13.0f}",
            flush=True,
        )
    if args.json:
        emit_json({"results": results, "machine": machine()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
