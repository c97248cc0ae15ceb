"""Small federations shared by the engine tests: logistic regression and a BatchNorm MLP."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest


def logistic_loss(params, batch):
    z = batch["x"] @ params["w"] + params["b"]
    return jnp.mean(jnp.logaddexp(0.0, z) - batch["y"] * z)


def logistic_accuracy(params, batch):
    z = batch["x"] @ params["w"] + params["b"]
    return ((z > 0) == (batch["y"] > 0.5)).astype(jnp.float32)


def make_clients(sizes, *, dim=5, seed=0, shift=0.5):
    """Heterogeneous logistic-regression clients: each has its own feature shift and weights."""
    rng = np.random.default_rng(seed)
    true_w = rng.normal(size=dim)
    clients = []
    for k, n in enumerate(sizes):
        x = (rng.normal(size=(n, dim)) + shift * k).astype(np.float32)
        w_k = true_w + 0.3 * rng.normal(size=dim)
        y = (x @ w_k + 0.1 * rng.normal(size=n) > shift * k * true_w.sum()).astype(np.float32)
        clients.append({"x": x, "y": y})
    return clients


@pytest.fixture
def logistic():
    train = make_clients([12, 30, 21, 45], seed=1)
    test = make_clients([8, 10, 0, 16], seed=2)
    params = {"w": jnp.zeros(5, jnp.float32), "b": jnp.zeros((), jnp.float32)}
    return train, test, params


class BNNet(nn.Module):
    """A two-layer MLP with BatchNorm: a model with state."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(8)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        return nn.Dense(1)(nn.relu(x))[:, 0]


def bn_functions():
    model = BNNet()

    def loss(params, state, batch):
        z, updates = model.apply(
            {"params": params, **state}, batch["x"], train=True, mutable=["batch_stats"]
        )
        value = jnp.mean(jnp.logaddexp(0.0, z) - batch["y"] * z)
        return value, {"batch_stats": updates["batch_stats"]}

    def accuracy(params, state, batch):
        z = model.apply({"params": params, **state}, batch["x"], train=False)
        return ((z > 0) == (batch["y"] > 0.5)).astype(jnp.float32)

    variables = model.init(jax.random.key(0), jnp.zeros((2, 5)), train=False)
    return loss, accuracy, variables["params"], {"batch_stats": variables["batch_stats"]}


def max_abs_diff(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
