"""``pj.federation.run`` on your own federation: clients of unequal size, your own metric.

Four hospitals hold different numbers of examples of one logistic-regression task whose
decision boundary shifts per hospital. The script trains Per-FedAvg for a few rounds, has the
engine evaluate the global and the personalized model on each hospital's test data with a
per-example accuracy, and prints the last round's numbers.

Run: ``python examples/federation_run.py`` (a few seconds on a CPU).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import pppml_jax as pj

SIZES = (40, 120, 64, 200)  # training examples per client: lengths may differ
DIM = 6


def loss_fn(params, batch):
    """Mean logistic loss; ``batch["x"]`` is ``[B, DIM]``, ``batch["y"]`` ``[B]`` in {0, 1}."""
    logits = batch["x"] @ params["w"] + params["b"]
    return jnp.mean(jnp.logaddexp(0.0, logits) - batch["y"] * logits)


def accuracy(params, batch):
    """Per-example accuracy ``[B]`` (the engine averages it over each client's test set)."""
    logits = batch["x"] @ params["w"] + params["b"]
    return ((logits > 0) == (batch["y"] > 0.5)).astype(jnp.float32)


def make_federation(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """One dict of numpy arrays per client, for training and for testing."""
    rng = np.random.default_rng(seed)
    w_true = 2.0 * rng.normal(size=DIM)
    train, test = [], []
    for size in SIZES:
        w = w_true + 1.5 * rng.normal(size=DIM)  # this client's own boundary
        for out, n in ((train, size), (test, 50)):
            x = rng.normal(size=(n, DIM)).astype(np.float32)
            y = (x @ w + 0.3 * rng.normal(size=n) > 0).astype(np.float32)
            out.append({"x": x, "y": y})
    return train, test


def main() -> dict[str, float]:
    """Trains the federation and returns the last round's mean accuracies."""
    clients, tests = make_federation()
    params = {"w": jnp.zeros(DIM), "b": jnp.zeros(())}
    hist = pj.federation.run(
        loss_fn, params, clients, algorithm="perfedavg", rounds=8, local_steps=5,
        batch_size=16, alpha=0.1, beta=0.3, personalize_steps=5,
        test_clients=tests, eval_fn=accuracy, seed=0,
    )  # fmt: skip
    last = hist.rounds[-1]
    return {
        "rounds": len(hist.rounds),
        "mean_global": float(last["mean_global"]),
        "mean_personalized": float(last["mean_personalized"]),
        "seconds": float(sum(r["seconds"] for r in hist.rounds)),
    }


if __name__ == "__main__":
    summary = main()
    print(f"{summary['rounds']} rounds of Per-FedAvg in {summary['seconds']:.1f} s")
    print(f"mean test accuracy, global model:       {summary['mean_global']:.3f}")
    print(f"mean test accuracy, personalized model: {summary['mean_personalized']:.3f}")
