"""Seconds per federated round: vmap, loop and a bare loop, same model and data, one process.

Workload (docs/method.md 4): a 2-convolution CNN (SmallCNN, 8,938 parameters), 64 images of
28x28 per client, FedAvg with 5 local SGD steps of batch 16. Every mode is compiled first
(compile time reported apart), then their rounds alternate and the median of the repeats is
reported, so that load on a shared machine hits all alike.

The ``bare`` reference is what a user writes without the engine: a Python loop over one
jitted client function (pppml-jax's ``make_client_update`` with ``sgd_rule``, 5 unrolled
steps, the client's data already on the device), a jitted weighted accumulation of the new
models and one host sync per round. ``loop_s / bare_s`` is the engine's overhead
(issue 13: within 5%).

    python benchmarks/client_throughput.py                  # 8, 32 and 128 clients, a table
    python benchmarks/client_throughput.py --clients 32 --json
    python benchmarks/client_throughput.py --clients 32 --modes loop bare --repeats 15

With ``--json`` the last line is one JSON object: for a single ``--clients N``
``{"clients", "vmap_s", "loop_s", "bare_s", "loop_vs_bare" (= loop_s / bare_s), "speedup"
(= loop_s / vmap_s), "auto", "platform", "peak_rss_mb", ...}`` (a mode left out: None);
for several sizes ``{"results": [one such object per size], ...}``.
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

from pppml_jax.algorithms.client_update import make_client_update, sgd_rule
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


class BareLoop:
    """FedAvg as a Python loop over one jitted client function: the no-engine reference.

    Same arithmetic as the engine's FedAvg: each client takes ``local_steps`` SGD steps of
    size ``lr`` on batches drawn from ``fold_in(fold_in(key(seed), round), client)``; the new
    model is the sample-weighted mean of the client models.
    """

    def __init__(self, loss_fn, clients, *, local_steps: int, batch_size: int, lr: float):
        update = make_client_update(
            lambda p, s, b: (loss_fn(p, b), s),
            sgd_rule(),
            optax.sgd(lr),
            local_steps=local_steps,
            batch_size=batch_size,
        )

        def client(params, data, num_examples, round_index, client_id):
            key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), round_index), client_id)
            return update(params, None, data, num_examples, key).params

        self.client = jax.jit(client)
        self.add = jax.jit(lambda total, new, w: jax.tree.map(lambda t, x: t + w * x, total, new))
        self.scale = jax.jit(lambda total, w: jax.tree.map(lambda t: t / w, total))
        self.data = [jax.device_put(c) for c in clients]
        self.counts = [np.int32(len(c["label"])) for c in clients]
        self.weights = [np.float32(n) for n in self.counts]
        self.total_weight = np.float32(sum(self.weights))

    def round(self, params, round_index: int):
        """One round; returns ``(new params, seconds)``."""
        start = time.perf_counter()
        r = np.int32(round_index)
        total = jax.tree.map(jnp.zeros_like, params)
        for k, (data, n, w) in enumerate(zip(self.data, self.counts, self.weights, strict=True)):
            total = self.add(total, self.client(params, data, n, r, np.int32(k)), w)
        params = jax.block_until_ready(self.scale(total, self.total_weight))
        return params, time.perf_counter() - start


MODES = {
    "vmap": {"execution": "vmap"},
    "loop": {"execution": "loop"},
    "loop_steps": {"execution": "loop", "step_programs": True},
    "loop_whole": {"execution": "loop", "step_programs": False},
    "bare": None,
}
"""vmap: one fused program per round; loop: the CPU default (``execution="loop"`` as a user
gets it: one program per client for this 9k-parameter model, FederationConfig.step_programs);
loop_steps: a program per local step per client (the default for models above 50k
parameters, small compiles); loop_whole: one program per client for all of its local steps;
bare: :class:`BareLoop`, no engine."""


def measure(
    num_clients: int,
    *,
    repeats: int,
    examples: int,
    image: int,
    local_steps: int,
    batch_size: int,
    unroll: bool,
    modes: tuple[str, ...] = tuple(MODES),
) -> dict:
    loss_fn, params, clients = make_workload(num_clients, examples, image)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    steps, states, compile_s = {}, {}, {}
    for mode in modes:
        options = MODES[mode]
        start = time.perf_counter()
        if options is None:
            bare = BareLoop(
                loss_fn, clients, local_steps=local_steps, batch_size=batch_size, lr=0.05
            )
            states[mode] = (bare.round(params, 0)[0], 1)

            def step(state, bare=bare):
                new, seconds = bare.round(*state)
                return (new, state[1] + 1), seconds

        else:
            config = FederationConfig(
                algorithm="fedavg",
                local_steps=local_steps,
                batch_size=batch_size,
                lr=0.05,
                unroll=unroll,
                **options,
            )
            fed = Federation(loss_fn, clients, config)
            states[mode], _ = fed.round(fed.init(params))

            def step(state, fed=fed):
                new, info = fed.round(state)
                return new, info.seconds

        compile_s[mode] = time.perf_counter() - start
        steps[mode] = step
    times = {mode: [] for mode in modes}
    for _ in range(repeats):
        for mode in modes:
            states[mode], seconds = steps[mode](states[mode])
            times[mode].append(seconds)
    seconds = {mode: median(t) for mode, t in times.items()}
    vmap_s, loop_s, bare_s = (seconds.get(m) for m in ("vmap", "loop", "bare"))
    auto_mode = resolve_execution("auto")
    engine = {m: s for m, s in seconds.items() if m != "bare"}
    return {
        "clients": num_clients,
        "vmap_s": vmap_s,
        "loop_s": loop_s,
        "loop_whole_s": seconds.get("loop_whole"),
        "loop_steps_s": seconds.get("loop_steps"),
        "bare_s": bare_s,
        "loop_vs_bare": loop_s / bare_s if loop_s and bare_s else None,
        "speedup": loop_s / vmap_s if loop_s and vmap_s else None,
        "auto": auto_mode,
        "auto_s": seconds.get(auto_mode),
        "auto_vs_fastest": (
            seconds[auto_mode] / min(engine.values()) if auto_mode in seconds else None
        ),
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
    parser.add_argument("--modes", nargs="+", choices=tuple(MODES), default=list(MODES))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = []
    print("clients  " + "  ".join(f"{m + ' s/round':>15}" for m in args.modes) + "  loop/bare")
    for n in args.clients:
        r = measure(
            n,
            repeats=args.repeats,
            examples=args.examples,
            image=args.image,
            local_steps=args.local_steps,
            batch_size=args.batch_size,
            unroll=not args.scan,
            modes=tuple(args.modes),
        )
        results.append(r)
        first = ", ".join(f"{m} {s:.1f} s" for m, s in r["first_round_s"].items())
        ratio = f"{r['loop_vs_bare']:.3f}" if r["loop_vs_bare"] else "-"
        cells = "  ".join(f"{r[m + '_s']:>15.3f}" for m in args.modes)
        print(
            f"{n:>7}  {cells}  {ratio:>9}   (first rounds: {first}; peak RSS "
            f"{r['peak_rss_mb']:.0f} MiB)",
            flush=True,
        )
    if args.json:
        emit_json(results[0] if len(results) == 1 else {"results": results, "machine": machine()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
