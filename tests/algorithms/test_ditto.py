"""Ditto against a closed form on quadratics, local training (lam = 0) and FedAvg.

f_i(w) = a_i/2 ||w - c_i||^2: one local step from (w, v) is w - lr a (w - c) for the global
copy and v - plr (a (v - c) + lam (v - w)) for the personal model.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _algo_driver import Driver, make_context, max_abs_diff, stateless

import pppml_jax as pj
from pppml_jax.algorithms.ditto import DittoState

A = np.array([0.5, 2.0], np.float32)
C = np.array([[1.0, -2.0], [3.0, 0.5]], np.float32)
N = [1.0, 3.0]
LR, K = 0.1, 3
PARAMS = {"w": jnp.zeros(2, jnp.float32)}
CLIENTS = [{"a": jnp.float32(a), "c": jnp.asarray(c)} for a, c in zip(A, C, strict=True)]


def quad(params, batch):
    return 0.5 * batch["a"] * jnp.sum((params["w"] - batch["c"]) ** 2)


def driver(algorithm, local_steps=K):
    ctx = make_context(algorithm, stateless(quad), local_steps=local_steps, lr=LR)
    return Driver(algorithm, ctx, CLIENTS, N)


def test_one_step_closed_form_with_its_own_personal_step_size():
    lam, plr = 0.7, 0.05
    d = driver(pj.algorithms.ditto(lam=lam, personal_lr=plr), local_steps=1)
    x = np.array([0.3, -0.4], np.float32)
    v = np.array([1.5, 0.2], np.float32)
    params, server, _, _ = d.init({"w": jnp.asarray(x)})
    message, state, _, _ = d.client_round(
        params, server, DittoState({"w": jnp.asarray(v)}), None, 1
    )
    a, c = A[1], C[1]
    np.testing.assert_allclose(message["w"], -LR * a * (x - c), rtol=1e-5)
    np.testing.assert_allclose(
        state.params["w"], v - plr * (a * (v - c) + lam * (v - x)), rtol=1e-5
    )


def test_lam_zero_is_local_training_and_the_global_model_is_fedavg():
    rounds = 3
    params, _, clients, _ = driver(pj.algorithms.ditto(lam=0.0)).run(PARAMS, rounds)
    fedavg = driver(pj.algorithms.fedavg()).run(PARAMS, rounds)[0]
    assert max_abs_diff(params, fedavg) == 0.0
    for i in range(len(CLIENTS)):
        v = np.zeros(2, np.float32)  # the independent loop: rounds * K gradient steps alone
        for _ in range(rounds * K):
            v = v - LR * A[i] * (v - C[i])
        np.testing.assert_allclose(clients[i].params["w"], v, rtol=1e-5, atol=1e-6)


def test_large_lam_keeps_the_personal_model_near_the_global_one():
    def gap(lam):
        params, _, clients, _ = driver(pj.algorithms.ditto(lam=lam)).run(PARAMS, 4)
        return max(float(jnp.linalg.norm(c.params["w"] - params["w"])) for c in clients)

    gaps = [gap(lam) for lam in (0.0, 1.0, 4.0, 1.0 / LR)]
    assert all(g1 > g2 for g1, g2 in itertools.pairwise(gaps)), gaps
    assert gaps[-1] < 0.25 * gaps[0]


def test_personal_model_is_the_client_state_and_options_are_checked():
    alg = pj.algorithms.ditto(lam=0.1)
    assert alg.fine_tune is False and "personal_lr" not in alg.hparams
    state = DittoState({"w": jnp.ones(2)})
    assert alg.personal_model(None, PARAMS, state) is state.params
    assert alg.global_model(None, PARAMS, state) is PARAMS
    for bad in (-1.0, None, True):
        with pytest.raises(ValueError, match="lam="):
            pj.algorithms.ditto(lam=bad)
    with pytest.raises(ValueError, match="personal_lr="):
        pj.algorithms.ditto(lam=0.1, personal_lr=0.0)
    jax.tree.map(np.testing.assert_array_equal, alg.init_client(None, PARAMS).params, PARAMS)
