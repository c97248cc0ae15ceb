"""Own data, own model: the pure local steps under ``jax.jit`` and ``jax.vmap`` over clients.

Eight clients each hold a logistic-regression problem whose true weights are shifted a little
per client (heterogeneity). The script

1. jit-compiles one Per-FedAvg step (``variant`` and ``loss_fn`` are static arguments: they
   select the program, they are not arrays),
2. runs it on every client at once with ``jax.vmap`` and checks it against a Python loop,
3. averages the clients' new models (one FedAvg-style round of Per-FedAvg),
4. personalizes the result on each client with ``pj.personalize`` (``steps`` is static too)
   and reports the mean test loss before and after.

Run: ``python examples/pure_steps.py`` (a few seconds on a CPU).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import pppml_jax as pj

NUM_CLIENTS, NUM_EXAMPLES, DIM = 8, 64, 5


def loss_fn(params, batch):
    """Mean logistic loss of ``x @ w + b`` against labels ``y`` in {0, 1}."""
    logits = batch["x"] @ params["w"] + params["b"]
    return jnp.mean(jnp.logaddexp(0.0, logits) - batch["y"] * logits)


def make_clients(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Stacked train and test data: ``x [K, N, DIM]`` float32, ``y [K, N]`` in {0, 1}."""
    rng = np.random.default_rng(seed)
    w_true = 2.0 * rng.normal(size=DIM)
    shifts = 1.5 * rng.normal(size=(NUM_CLIENTS, DIM))  # each client's own decision boundary

    def draw() -> dict[str, np.ndarray]:
        x = rng.normal(size=(NUM_CLIENTS, NUM_EXAMPLES, DIM)).astype(np.float32)
        logits = np.einsum("knd,kd->kn", x, w_true + shifts)
        y = (rng.uniform(size=logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float32)
        return {"x": x, "y": y}

    return draw(), draw()


# The hyper-parameters are ordinary floats (traced); the loss and the variant pick the program.
perfedavg_step = jax.jit(pj.perfedavg_step, static_argnames=("loss_fn", "variant"))
personalize = jax.jit(pj.personalize, static_argnames=("loss_fn", "steps"))


def client_step(params, batch):
    """One client's Per-FedAvg step: batches a, b, c are thirds of its data."""
    third = NUM_EXAMPLES // 3
    a, b, c = (jax.tree.map(lambda v, i=i: v[i * third : (i + 1) * third], batch) for i in range(3))
    return perfedavg_step(loss_fn, params, a, b, c, alpha=0.1, beta=0.5, variant="hf")


def main() -> dict[str, float]:
    """Runs the steps and returns the numbers the script prints."""
    train, test = make_clients(seed=0)
    params = {"w": jnp.zeros(DIM), "b": jnp.zeros(())}

    # Every client at once: params are shared (in_axes=None), data is split along axis 0.
    all_clients_step = jax.jit(jax.vmap(client_step, in_axes=(None, 0)))
    stepped = all_clients_step(params, train)
    looped = [
        client_step(params, jax.tree.map(lambda v, k=k: v[k], train)) for k in range(NUM_CLIENTS)
    ]
    gap = max(float(jnp.max(jnp.abs(stepped["w"][k] - looped[k]["w"]))) for k in range(NUM_CLIENTS))

    params = jax.tree.map(lambda v: v.mean(axis=0), stepped)  # equal weights: plain mean
    for _ in range(30):  # a few more rounds of the same
        params = jax.tree.map(lambda v: v.mean(axis=0), all_clients_step(params, train))

    def test_loss(p, k):
        return loss_fn(p, jax.tree.map(lambda v: v[k], test))

    mine = jax.vmap(lambda b: personalize(loss_fn, params, b, alpha=0.2, steps=5))(train)
    before = np.mean([float(test_loss(params, k)) for k in range(NUM_CLIENTS)])
    after = np.mean(
        [float(test_loss(jax.tree.map(lambda v, k=k: v[k], mine), k)) for k in range(NUM_CLIENTS)]
    )
    return {"vmap_vs_loop_max_abs": gap, "test_loss_global": before, "test_loss_personal": after}


if __name__ == "__main__":
    summary = main()
    print(f"vmap over clients == loop over clients: max |difference| = "
          f"{summary['vmap_vs_loop_max_abs']:.2e}")  # fmt: skip
    print(f"mean test loss, shared model:       {summary['test_loss_global']:.4f}")
    print(f"mean test loss, after personalize:  {summary['test_loss_personal']:.4f}")
