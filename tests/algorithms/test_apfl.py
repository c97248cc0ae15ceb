"""APFL: the gradients w.r.t. the personal model and the mixing weight, and mix = 0 is FedAvg.

The mixed loss L(v, a) = f(a v + (1 - a) w) is differentiated two independent ways: by the
chain rule with jax.grad of f at the mixed point (grad_v = a g, grad_a = <g, v - w>), and by
central finite differences of a float64 numpy logistic loss.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _algo_driver import Driver, make_context, max_abs_diff, stateless

import pppml_jax as pj
from pppml_jax.algorithms.apfl import ApflState

LR, MIX_LR = 0.3, 0.2
N = [7.0, 11.0]


def logistic(params, batch):
    z = batch["x"] @ params["w"] + params["b"]
    return jnp.mean(jnp.logaddexp(0.0, z) - batch["y"] * z)


def logistic_np(w, b, batch):
    z = np.asarray(batch["x"], np.float64) @ w + b
    return np.mean(np.logaddexp(0.0, z) - np.asarray(batch["y"], np.float64) * z)


def make_clients():
    rng = np.random.default_rng(5)
    out = []
    for k, n in enumerate(N):
        x = rng.normal(size=(int(n), 3)) + 0.5 * k
        y = x @ np.array([1.0, -0.5, 0.3]) + 0.3 * rng.normal(size=int(n)) > 0.4 * k
        out.append({"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(y, jnp.float32)})
    return out


CLIENTS = make_clients()
PARAMS = {"w": jnp.zeros(3, jnp.float32), "b": jnp.float32(0.0)}


def driver(algorithm, local_steps=2):
    ctx = make_context(algorithm, stateless(logistic), local_steps=local_steps, lr=LR)
    return Driver(algorithm, ctx, CLIENTS, N)


def test_one_step_gradients_against_chain_rule_and_finite_differences():
    rng = np.random.default_rng(6)
    w0 = {"w": jnp.asarray(rng.normal(size=3), jnp.float32), "b": jnp.float32(0.2)}
    v0 = {"w": jnp.asarray(rng.normal(size=3), jnp.float32), "b": jnp.float32(-0.4)}
    a0 = 0.3
    d = driver(pj.algorithms.apfl(mix=0.5, mix_lr=MIX_LR), local_steps=1)
    _, server, _, _ = d.init(w0)
    state = ApflState(v0, jnp.float32(a0))
    message, new, _, _ = d.client_round(w0, server, state, None, 0)

    # chain rule with an independent jax.grad of f at the mixed point
    batch = CLIENTS[0]
    vbar = jax.tree.map(lambda v, w: a0 * v + (1 - a0) * w, v0, w0)
    g = jax.grad(logistic)(vbar, batch)
    g_v = jax.tree.map(lambda x: a0 * x, g)
    g_a = sum(float(jnp.vdot(g[k], v0[k] - w0[k])) for k in g)
    for k in v0:
        np.testing.assert_allclose(new.params[k], v0[k] - LR * g_v[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(new.mix), a0 - MIX_LR * g_a, rtol=1e-5, atol=1e-6)
    g_w = jax.grad(logistic)(w0, batch)
    for k in w0:
        np.testing.assert_allclose(message[k], -LR * g_w[k], rtol=1e-5, atol=1e-6)

    # central finite differences of the float64 mixed loss
    vw, vb = np.asarray(v0["w"], np.float64), float(v0["b"])
    ww, wb = np.asarray(w0["w"], np.float64), float(w0["b"])

    def mixed(vw_, vb_, a_):
        return logistic_np(a_ * vw_ + (1 - a_) * ww, a_ * vb_ + (1 - a_) * wb, batch)

    eps = 1e-5
    fd_a = (mixed(vw, vb, a0 + eps) - mixed(vw, vb, a0 - eps)) / (2 * eps)
    fd_v = [
        (mixed(vw + eps * e, vb, a0) - mixed(vw - eps * e, vb, a0)) / (2 * eps) for e in np.eye(3)
    ]
    fd_b = (mixed(vw, vb + eps, a0) - mixed(vw, vb - eps, a0)) / (2 * eps)
    np.testing.assert_allclose(g_a, fd_a, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g_v["w"], fd_v, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g_v["b"], fd_b, rtol=1e-4, atol=1e-6)


def test_mix_fixed_at_zero_is_fedavg_exactly():
    apfl = driver(pj.algorithms.apfl(mix=0.0, learn_mix=False))
    params, _, clients, _ = apfl.run(PARAMS, 3)
    fedavg = driver(pj.algorithms.fedavg()).run(PARAMS, 3)[0]
    assert max_abs_diff(params, fedavg) == 0.0
    for c in clients:
        assert float(c.mix) == 0.0
        assert max_abs_diff(apfl.alg.personal_model(apfl.ctx, params, c), params) == 0.0


def test_learned_mix_is_clipped_and_a_fixed_mix_never_moves():
    d = driver(pj.algorithms.apfl(mix=0.5, mix_lr=1e4))
    _, _, clients, _ = d.run(PARAMS, 2)
    assert all(float(c.mix) in (0.0, 1.0) for c in clients)
    assert all(c.mix.dtype == jnp.float32 for c in clients)
    _, _, clients, _ = driver(pj.algorithms.apfl(mix=0.7, learn_mix=False)).run(PARAMS, 2)
    assert all(float(c.mix) == pytest.approx(0.7) for c in clients)
    assert max_abs_diff(clients[0].params, PARAMS) > 1e-3  # v still trains


def test_bad_options_are_refused_naming_them():
    for kwargs, name in [
        ({"mix": 1.5}, "mix="),
        ({"mix": True}, "mix="),
        ({"learn_mix": 1}, "learn_mix="),
        ({"mix_lr": -1.0}, "mix_lr="),
    ]:
        with pytest.raises(ValueError, match=name):
            pj.algorithms.apfl(**kwargs)
    assert pj.algorithms.apfl().options == {"learn_mix": True}
