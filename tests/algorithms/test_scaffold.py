"""SCAFFOLD against closed forms on heterogeneous quadratics f_i(w) = a_i/2 ||w - c_i||^2.

K local gradient steps of size lr from x give y_i = c_i + r_i (x - c_i), r_i = (1 - lr a_i)^K.
FedAvg (server sgd(1)) therefore has the fixed point x_avg = sum p_i (1 - r_i) c_i / sum p_i
(1 - r_i), while the global objective sum p_i f_i has its optimum at x* = sum p_i a_i c_i /
sum p_i a_i: they differ when the curvatures differ and K > 1 (client drift). SCAFFOLD's
control variates remove the drift: it converges to x*.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _algo_driver import Driver, make_context, max_abs_diff, stateless

import pppml_jax as pj

A = np.array([0.5, 1.0, 3.0], np.float32)  # curvatures
C = np.array([[1.0, -2.0], [3.0, 0.5], [-1.0, 2.0]], np.float32)  # optima
N = np.array([1.0, 2.0, 3.0])  # sample counts (aggregation weights)
LR, K = 0.1, 5


def quad(params, batch):
    return 0.5 * batch["a"] * jnp.sum((params["w"] - batch["c"]) ** 2)


CLIENTS = [{"a": jnp.float32(a), "c": jnp.asarray(c)} for a, c in zip(A, C, strict=True)]
PARAMS = {"w": jnp.zeros(2, jnp.float32)}


def driver(algorithm, participation=1.0, local_optimizer=optax.sgd, loss=quad):
    ctx = make_context(
        algorithm,
        stateless(loss),
        local_steps=K,
        lr=LR,
        participation=participation,
        local_optimizer=local_optimizer,
    )
    return Driver(algorithm, ctx, CLIENTS, N)


def test_fedavg_drifts_scaffold_reaches_the_global_optimum():
    p = N / N.sum()
    r = (1.0 - LR * A) ** K
    x_star = (p * A) @ C / (p * A).sum()
    x_avg = (p * (1 - r)) @ C / (p * (1 - r)).sum()
    assert np.linalg.norm(x_star - x_avg) > 0.1  # the drift this test is about

    fedavg = driver(pj.algorithms.fedavg()).run(PARAMS, 150)[0]["w"]
    scaffold = driver(pj.algorithms.scaffold()).run(PARAMS, 150)[0]["w"]
    np.testing.assert_allclose(fedavg, x_avg, atol=1e-4)
    np.testing.assert_allclose(scaffold, x_star, atol=1e-4)
    assert np.linalg.norm(np.asarray(scaffold) - x_avg) > 0.1


def test_first_round_control_variates_closed_form_and_participation():
    # from c = c_i = 0 the first round is FedAvg's; c_i+ = (x - y_i) / (K lr) and with half of
    # the clients sampled the server control moves by participation * mean(c_i+).
    sampled = (0, 2)
    d = driver(pj.algorithms.scaffold(), participation=0.5)
    x0 = np.array([0.5, -0.5], np.float32)
    state = d.init({"w": jnp.asarray(x0)})
    params, server, clients, _ = d.round(state, sampled)

    r = (1.0 - LR * A) ** K
    y = C + r[:, None] * (x0 - C)
    ci = (x0 - y) / (K * LR)
    w = N[list(sampled)] / N[list(sampled)].sum()
    np.testing.assert_allclose(params["w"], w @ y[list(sampled)], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(server.control["w"], 0.5 * (w @ ci[list(sampled)]), atol=1e-5)
    for i in sampled:
        np.testing.assert_allclose(clients[i].control["w"], ci[i], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(clients[1].control["w"], np.zeros(2))  # not sampled


def test_second_round_local_step_uses_the_corrected_gradient():
    # one step of size lr along g - c_i + c, checked by hand after a round that set c and c_i
    d = driver(pj.algorithms.scaffold())
    state = d.round(d.init(PARAMS))
    params, server, clients, _ = state
    x, c = np.asarray(params["w"]), np.asarray(server.control["w"])
    _, _, _, carries = d.client_round(params, server, clients[1], None, 1)
    expected = x - LR * (A[1] * (x - C[1]) - np.asarray(clients[1].control["w"]) + c)
    np.testing.assert_allclose(carries[1].params["w"], expected, rtol=1e-5, atol=1e-6)
    assert max_abs_diff(carries[0].params, params) == 0.0


def test_sgd_control_variate_equals_option_ii():
    # in round 2 (c, c_i nonzero) the mean raw gradient equals option II's
    # c_i+ = c_i - c + (x - y) / (K lr), computed here from the iterates alone
    d = driver(pj.algorithms.scaffold())
    params, server, clients, _ = d.round(d.init(PARAMS))
    c = np.asarray(server.control["w"])
    assert np.abs(c).max() > 0.1
    for i in range(len(CLIENTS)):
        ci = np.asarray(clients[i].control["w"])
        msg, new, _, carries = d.client_round(params, server, clients[i], None, i)
        x, y = np.asarray(params["w"]), np.asarray(carries[-1].params["w"])
        option_ii = ci - c + (x - y) / (K * LR)
        assert np.abs(option_ii - ci).max() > 1e-3  # the control variate does move
        np.testing.assert_allclose(new.control["w"], option_ii, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(msg.delta_control["w"], option_ii - ci, rtol=1e-5, atol=1e-5)


def small_quad(params, batch):
    # gradients of size ~1e-3: Adam still moves each coordinate by ~lr per step
    return 1e-3 * quad(params, batch)


def test_adam_control_variate_is_the_mean_raw_gradient():
    d = driver(pj.algorithms.scaffold(), local_optimizer=optax.adam, loss=small_quad)
    params, server, clients, _ = d.round(d.init(PARAMS))
    c = server.control["w"]
    for i in range(len(CLIENTS)):
        ci = clients[i].control["w"]
        _, new, _, carries = d.client_round(params, server, clients[i], None, i)

        # replay the K Adam steps along g - c_i + c independently, collecting the raw gradients
        grad = jax.grad(small_quad)
        opt = optax.adam(LR)
        y = {"w": params["w"]}
        state = opt.init(y)
        raw = []
        for _ in range(K):
            g = grad(y, CLIENTS[i])
            raw.append(np.asarray(g["w"]))
            updates, state = opt.update({"w": g["w"] - ci + c}, state, y)
            y = optax.apply_updates(y, updates)
        np.testing.assert_allclose(carries[-1].params["w"], y["w"], rtol=1e-5, atol=1e-6)
        mean_raw = np.mean(raw, axis=0)
        np.testing.assert_allclose(new.control["w"], mean_raw, rtol=1e-5, atol=1e-9)

        # of the gradients' size, unlike option II's (x - y) / (K lr) under Adam
        g_max = max(np.abs(g).max() for g in raw)
        assert np.abs(np.asarray(new.control["w"])).max() <= g_max * (1 + 1e-5)
        option_ii = np.asarray(ci - c) + (np.asarray(params["w"]) - np.asarray(y["w"])) / (K * LR)
        assert np.abs(option_ii).max() > 100 * g_max
