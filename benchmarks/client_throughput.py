"""Seconds per federated round, vmap against loop execution, same model and data, one run.

Workload (docs/method.md 4): a 2-convolution CNN (SmallCNN, 8,938 parameters), 64 images of
28x28 per client, FedAvg with 5 local SGD steps of batch 16. Both modes are compiled first
(compile time reported apart), then their rounds alternate and the median of the repeats is
reported, so that load on a shared machine hits both alike.

    python benchmarks/client_throughput.py                  # 8, 32 and 128 clients, a table
    python benchmarks/client_throughput.py --clients 32 --json

With ``--json`` the last line is one JSON object: for a single ``--clients N``
``{"clients", "vmap_s", "loop_s", "speedup" (= loop_s / vmap_s), "auto", "platform",
"peak_rss_mb", ...}``; for several sizes ``{"results": [one such object per size], ...}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import emit_json, machine, median, peak_rss_mb

from pppml_jax.federation import Federation, FederationConfig, resolve_execution
from pppml_jax.models import SmallCNN


def make_workload(num_clients: int, examples: int, image: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    clients = [
        {
            "image": rng.normal(size=(examples, image, image, 1)).astype(np.float32),
            "label": rng.integers(0, 10, size=examples).astype(np.int32),
        }
        for _ in range(num_clients)
    ]
    model = SmallCNN(features=(16, 32), hidden=96, num_classes=10)
    params = model.init(jax.random.key(seed), jnp.zeros((1, image, image, 1)))["params"]

    def loss_fn(p, batch):
        logits = model.apply({"params": p}, batch["image"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    return loss_fn, params, clients


MODES = {
    "vmap": {"execution": "vmap"},
    "loop": {"execution": "loop", "step_programs": True},
    "loop_whole": {"execution": "loop", "step_programs": False},
}
"""vmap: one fused program per round; loop: a program per local step per client (the CPU
default, small compiles); loop_whole: one program per client for all of its local steps."""


def measure(
    num_clients: int,
    *,
    repeats: int,
    examples: int,
    image: int,
    local_steps: int,
    batch_size: int,
    unroll: bool,
) -> dict:
    loss_fn, params, clients = make_workload(num_clients, examples, image)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    feds, states, compile_s = {}, {}, {}
    for mode, options in MODES.items():
        config = FederationConfig(
            algorithm="fedavg",
            local_steps=local_steps,
            batch_size=batch_size,
            lr=0.05,
            unroll=unroll,
            **options,
        )
        feds[mode] = Federation(loss_fn, clients, config)
        start = time.perf_counter()
        states[mode], _ = feds[mode].round(feds[mode].init(params))
        compile_s[mode] = time.perf_counter() - start
    times = {mode: [] for mode in MODES}
    for _ in range(repeats):
        for mode in MODES:
            states[mode], info = feds[mode].round(states[mode])
            times[mode].append(info.seconds)
    seconds = {mode: median(t) for mode, t in times.items()}
    vmap_s, loop_s = seconds["vmap"], seconds["loop"]
    auto_mode = resolve_execution("auto")
    return {
        "clients": num_clients,
        "vmap_s": vmap_s,
        "loop_s": loop_s,
        "loop_whole_s": seconds["loop_whole"],
        "speedup": loop_s / vmap_s,
        "auto": auto_mode,
        "auto_s": seconds[auto_mode],
        "auto_vs_fastest": seconds[auto_mode] / min(seconds.values()),
        "first_round_s": compile_s,
        "repeats": repeats,
        "params": int(n_params),
        "workload": f"SmallCNN, {examples} images {image}x{image} per client, FedAvg, "
        f"{local_steps} local SGD steps of batch {batch_size}, unroll={unroll}",
        "platform": jax.default_backend(),
        "peak_rss_mb": peak_rss_mb(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="*", default=[8, 32, 128])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--image", type=int, default=28)
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--scan", action="store_true", help="rolled lax.scan over local steps")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = []
    print(
        f"{'clients':>8} {'vmap s/round':>13} {'loop s/round':>13} {'loop_whole':>11} "
        f"{'loop/vmap':>10}  auto"
    )
    for n in args.clients:
        r = measure(
            n,
            repeats=args.repeats,
            examples=args.examples,
            image=args.image,
            local_steps=args.local_steps,
            batch_size=args.batch_size,
            unroll=not args.scan,
        )
        results.append(r)
        first = r["first_round_s"]
        print(
            f"{n:>8} {r['vmap_s']:>13.3f} {r['loop_s']:>13.3f} {r['loop_whole_s']:>11.3f} "
            f"{r['speedup']:>10.2f}  {r['auto']}   (first rounds: vmap {first['vmap']:.1f} s, "
            f"loop {first['loop']:.1f} s, loop_whole {first['loop_whole']:.1f} s; "
            f"peak RSS {r['peak_rss_mb']:.0f} MiB)",
            flush=True,
        )
    if args.json:
        emit_json(results[0] if len(results) == 1 else {"results": results, "machine": machine()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
