"""Wall time of a seeds x lr sweep: R separate runs that each compile, against run_many.

Workload: a quickstart-like segmentation model (``UNet2D(features=8, levels=3, norm="group")``,
``--model unet``) or a SmallCNN classifier (``--model cnn``) on a small synthetic federation
(``--clients`` clients of ``--examples`` images of ``--image`` pixels), FedAvg with Adam as the
quickstart, evaluated after the last round. Three ways, one process, in this order:

- ``separate``: R ``pj.federation.run`` calls, each with the shared programs forgotten first
  (``compilation.clear()``): what every run cost before programs were shared;
- ``loop``: ``run_many(strategy="loop")``: the runs in turn, sharing compiled programs;
- ``vmap``: ``run_many(strategy="vmap")``: one program per round for all R runs.

Also the steady-state round time of one run, so the target "steady round x rounds x R + one
compilation" can be read off. ``--json``: the last line is one JSON object.

    python benchmarks/sweep.py --model cnn --seeds 5 --lrs 0.003 0.01 0.03 0.1 --json
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
from _common import emit_json, machine, peak_rss_mb

import pppml_jax as pj
from pppml_jax.federation import compilation
from pppml_jax.models import SmallCNN, UNet2D


def workload(model: str, clients: int, examples: int, image: int):
    """``(loss_fn, eval_fn, params, train, test)`` of a small synthetic federation."""
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(examples, image, image, 1)).astype(np.float32) for _ in range(clients)]
    if model == "unet":
        net = UNet2D(features=8, levels=3, norm="group")
        ys = [(xi[..., 0] > 0.5).astype(np.int32) for xi in x]
    else:
        net = SmallCNN(features=(16, 32), hidden=96, num_classes=10)
        ys = [rng.integers(0, 10, size=examples).astype(np.int32) for _ in range(clients)]
    variables = net.init(jax.random.key(0), jnp.zeros((1, image, image, 1)))
    params = variables["params"]

    def loss_fn(p, batch):
        logits = net.apply({"params": p}, batch["image"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    def eval_fn(p, batch):
        pred = jnp.argmax(net.apply({"params": p}, batch["image"]), axis=-1)
        hits = (pred == batch["label"]).astype(jnp.float32)
        return hits.reshape(hits.shape[0], -1).mean(axis=1)

    half = examples // 2
    train = [{"image": xi[:half], "label": yi[:half]} for xi, yi in zip(x, ys, strict=True)]
    test = [{"image": xi[half:], "label": yi[half:]} for xi, yi in zip(x, ys, strict=True)]
    return loss_fn, eval_fn, params, train, test


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("unet", "cnn"), default="unet")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.003, 0.01, 0.03, 0.1])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--image", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=2)
    parser.add_argument("--ways", nargs="+", default=["separate", "loop", "vmap"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    loss_fn, eval_fn, params, train, test = workload(
        args.model, args.clients, args.examples, args.image
    )
    options = dict(
        rounds=args.rounds,
        local_steps=args.local_steps,
        batch_size=4,
        local_optimizer="adam",
        eval_every=args.rounds,
        test_clients=test,
        eval_fn=eval_fn,
    )
    seeds, grid = list(range(args.seeds)), {"lr": args.lrs}
    runs = len(seeds) * len(args.lrs)
    seconds: dict[str, float] = {}
    compilation.clear()
    start = time.perf_counter()
    hist = pj.federation.run(loss_fn, params, train, seed=99, lr=0.01, **{**options, "rounds": 4})
    first_run_s = time.perf_counter() - start
    steady = float(np.median([r.seconds for r in hist.rounds[1:]]))
    for way in args.ways:
        start = time.perf_counter()
        if way == "separate":
            for seed in seeds:
                for lr in args.lrs:
                    compilation.clear()
                    pj.federation.run(loss_fn, params, train, seed=seed, lr=lr, **options)
        else:
            compilation.clear()
            pj.federation.run_many(
                loss_fn, params, train, seeds=seeds, grid=grid, strategy=way, **options
            )
        seconds[way] = time.perf_counter() - start
        print(f"{way:>9}: {seconds[way]:8.1f} s for {runs} runs", flush=True)
    result = {
        "model": args.model,
        "runs": runs,
        "rounds": args.rounds,
        "seconds": seconds,
        "steady_round_s": steady,
        "first_run_s": first_run_s,
        "target_s": steady * args.rounds * runs + first_run_s,
        "workload": f"{args.clients} clients x {args.examples // 2} train images "
        f"{args.image}x{args.image}, FedAvg + Adam, {args.local_steps} local steps of batch 4, "
        f"evaluated after round {args.rounds}",
        "peak_rss_mb": peak_rss_mb(),
        "machine": machine(),
    }
    print(
        f"steady round {steady:.3f} s; first run (compiles) {first_run_s:.1f} s; target "
        f"{result['target_s']:.1f} s"
    )
    if args.json:
        emit_json(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
