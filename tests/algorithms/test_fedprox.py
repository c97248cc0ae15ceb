"""FedProx through the engine: mu = 0 is FedAvg exactly, and a closed form on quadratics.

``pj.algorithms.fedprox(mu)`` steps the local optimizer (plain SGD by default, step ``lr``)
along ``grad f_i(w) + mu (w - w_g)``, the gradient of ``f_i(w) + mu/2 ||w - w_g||^2`` with
``w_g`` the round's broadcast model. On ``f_i(w) = 1/2 ||w - c_i||^2`` one local step is

    w <- w - lr ((w - c_i) + mu (w - w_g)),

so after K steps from w_g: ``w_i = s_i + (1 - lr (1 + mu))^K (w_g - s_i)`` with
``s_i = (c_i + mu w_g) / (1 + mu)``. FedAvg aggregation with the default server optimizer
``optax.sgd(server_lr)`` gives ``w_g + server_lr * sum_i n_i (w_i - w_g) / sum_i n_i``
(the sample-weighted mean of the w_i when server_lr = 1).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pppml_jax as pj


def logistic_loss(params, batch):
    z = batch["x"] @ params["w"] + params["b"]
    return jnp.mean(jnp.logaddexp(0.0, z) - batch["y"] * z)


def logistic_clients(sizes, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    clients = []
    for k, n in enumerate(sizes):
        x = (rng.normal(size=(n, dim)) + 0.5 * k).astype(np.float32)
        y = (x @ rng.normal(size=dim) > 0).astype(np.float32)
        clients.append({"x": x, "y": y})
    return clients


def quad_loss(w, batch):
    # every example of client i is the point c_i, so any batch's gradient is w - c_i
    return 0.5 * jnp.mean(jnp.sum((w[None, :] - batch["c"]) ** 2, axis=1))


def quadratic_clients(centres, sizes):
    return [
        {"c": np.tile(np.asarray(c, np.float32), (n, 1))}
        for c, n in zip(centres, sizes, strict=True)
    ]


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True))


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_mu_zero_is_fedavg_exactly(execution):
    clients = logistic_clients([10, 25, 17])
    params = {"w": jnp.zeros(4, jnp.float32), "b": jnp.zeros((), jnp.float32)}
    common = {
        "rounds": 3,
        "local_steps": 3,
        "batch_size": 8,
        "lr": 0.3,
        "clients_per_round": 2,
        "execution": execution,
    }
    prox = pj.federation.run(
        logistic_loss, params, clients, algorithm=pj.algorithms.fedprox(mu=0.0), **common
    )
    avg = pj.federation.run(
        logistic_loss, params, clients, algorithm=pj.algorithms.fedavg(), **common
    )
    assert leaves_equal(prox.params, avg.params)
    for field in ("params", "server_state", "client_state", "model_state"):
        assert leaves_equal(getattr(prox.state, field), getattr(avg.state, field)), field
    assert [r.train_loss for r in prox.rounds] == [r.train_loss for r in avg.rounds]
    assert [r.clients for r in prox.rounds] == [r.clients for r in avg.rounds]
    assert not leaves_equal(avg.params, params)  # it trained


def expected_fedprox(w0, centres, sizes, *, mu, lr, steps, rounds, server_lr):
    """FedProx on the quadratics, by the explicit recursion in float64 (no package code)."""
    n = np.asarray(sizes, np.float64)
    g = np.asarray(w0, np.float64)
    for _ in range(rounds):
        locals_ = []
        for c in centres:
            w = g.copy()
            for _ in range(steps):
                w = w - lr * ((w - c) + mu * (w - g))
            locals_.append(w)
        delta = (n[:, None] * (np.stack(locals_) - g)).sum(0) / n.sum()
        g = g + server_lr * delta
    return g


@pytest.mark.parametrize(
    ("execution", "server_lr", "rounds"),
    [("vmap", 1.0, 1), ("loop", 1.0, 1), ("vmap", 1.0, 3), ("loop", 0.6, 2)],
)
def test_quadratic_closed_form(execution, server_lr, rounds):
    rng = np.random.default_rng(3)
    dim, sizes, lr, steps, mu = 3, [6, 20, 9], 0.2, 4, 0.8
    centres = rng.normal(size=(3, dim)) * 2.0
    w0 = rng.normal(size=dim)
    clients = quadratic_clients(centres, sizes)

    expected = expected_fedprox(
        w0, centres, sizes, mu=mu, lr=lr, steps=steps, rounds=rounds, server_lr=server_lr
    )
    if rounds == 1:  # the recursion agrees with the closed form of the module docstring
        s = (centres + mu * w0) / (1 + mu)
        w_i = s + (1 - lr * (1 + mu)) ** steps * (w0 - s)
        n = np.asarray(sizes, np.float64)
        mean = (n[:, None] * w_i).sum(0) / n.sum()
        np.testing.assert_allclose(expected, w0 + server_lr * (mean - w0), rtol=1e-12)

    hist = pj.federation.run(
        quad_loss,
        jnp.asarray(w0, jnp.float32),
        clients,
        algorithm=pj.algorithms.fedprox(mu=mu),
        rounds=rounds,
        local_steps=steps,
        batch_size=4,
        lr=lr,
        server_lr=server_lr,
        execution=execution,
    )
    np.testing.assert_allclose(np.asarray(hist.params), expected, rtol=1e-5, atol=1e-6)
    fedavg = expected_fedprox(
        w0, centres, sizes, mu=0.0, lr=lr, steps=steps, rounds=rounds, server_lr=server_lr
    )
    assert np.abs(expected - fedavg).max() > 1e-2  # the proximal term mattered


def test_its_own_lr_overrides_the_run_lr():
    centres = np.array([[1.0, -1.0], [2.0, 0.5]])
    sizes, mu, lr, steps = [4, 8], 0.5, 0.1, 3
    w0 = np.zeros(2)
    clients = quadratic_clients(centres, sizes)
    hist = pj.federation.run(
        quad_loss,
        jnp.zeros(2, jnp.float32),
        clients,
        algorithm=pj.algorithms.fedprox(mu=mu, lr=lr),
        rounds=1,
        local_steps=steps,
        batch_size=4,
        lr=0.9,  # ignored: the algorithm's lr wins
    )
    expected = expected_fedprox(
        w0, centres, sizes, mu=mu, lr=lr, steps=steps, rounds=1, server_lr=1.0
    )
    np.testing.assert_allclose(np.asarray(hist.params), expected, rtol=1e-5, atol=1e-6)


def test_bad_options_are_rejected():
    for bad in (-0.1, None, True, "1"):
        with pytest.raises(ValueError, match="mu="):
            pj.algorithms.fedprox(mu=bad)
    with pytest.raises(ValueError, match="lr="):
        pj.algorithms.fedprox(mu=0.1, lr=0.0)
    alg = pj.algorithms.fedprox(mu=0.25)
    assert alg.name == "fedprox" and alg.hparams == {"lr": None, "mu": 0.25}
