"""The L-BFGS solvers and the matching objective: closed-form minima, stopping rules, TV."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pppml_jax.attacks import (
    gradient_distance,
    minimize_lbfgs,
    minimize_optax_lbfgs,
    total_variation,
)

SOLVERS = {"lbfgs": minimize_lbfgs, "optax": minimize_optax_lbfgs}

# An ill-conditioned quadratic 0.5 (x - c)^T A (x - c) with eigenvalues from 1 to 1e3.
_RNG = np.random.default_rng(0)
_Q, _ = np.linalg.qr(_RNG.normal(size=(12, 12)))
_A = jnp.asarray(_Q @ np.diag(np.logspace(0, 3, 12)) @ _Q.T, jnp.float32)
_C = jnp.asarray(_RNG.normal(size=(3, 4)), jnp.float32)


def _quadratic(x):
    d = (x - _C).reshape(-1)
    return 0.5 * d @ _A @ d


def _rosenbrock(x):
    return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_quadratic_reaches_its_closed_form_minimiser(name):
    run = jax.jit(lambda x0: SOLVERS[name](_quadratic, x0, steps=200, memory_size=10))
    res = run(jnp.zeros((3, 4)))
    assert res.x.shape == (3, 4)
    np.testing.assert_allclose(res.x, _C, atol=2e-3)
    assert float(res.value) < 1e-5
    assert float(res.value) == pytest.approx(float(_quadratic(res.x)), abs=1e-7)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_rosenbrock_reaches_one_one(name):
    res = jax.jit(lambda x0: SOLVERS[name](_rosenbrock, x0, steps=300, memory_size=10))(
        jnp.array([-1.2, 1.0])
    )
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-2)


def test_stopping_rules_steps_tol_and_patience():
    x0 = jnp.zeros((3, 4))
    capped = minimize_lbfgs(_quadratic, x0, steps=5)
    assert int(capped.iterations) == 5
    tol = 1e-2
    early = minimize_lbfgs(_quadratic, x0, steps=500, tol=tol)
    assert float(early.value) <= tol
    full = minimize_lbfgs(_quadratic, x0, steps=500, tol=0.0)
    assert int(early.iterations) < int(full.iterations)
    # A constant objective can never improve: patience (or the rejection cap) ends it.
    flat = minimize_lbfgs(lambda x: jnp.sum(x) * 0.0 + 1.0, x0, steps=1000, patience=3)
    assert int(flat.iterations) < 1000


def test_max_move_bounds_every_step():
    """With a trust region of 0.01 per step, 5 evaluations move no coordinate beyond 0.04."""
    res = minimize_lbfgs(_quadratic, jnp.zeros((3, 4)), steps=5, max_move=0.01, patience=100)
    assert float(jnp.max(jnp.abs(res.x))) <= 0.04 + 1e-6


def test_vmap_over_starting_points_equals_a_loop():
    """Batched restarts follow the same path (a few steps: float32 rounding of the batched
    products differs, and an ill-conditioned problem amplifies it over many steps)."""
    starts = jax.random.normal(jax.random.key(0), (3, 3, 4))
    solve = jax.jit(lambda x0: minimize_lbfgs(_quadratic, x0, steps=8, memory_size=5))
    batched = jax.vmap(solve)(starts)
    for i in range(3):
        one = solve(starts[i])
        np.testing.assert_allclose(batched.x[i], one.x, rtol=1e-4, atol=1e-4)
        assert int(batched.iterations[i]) == int(one.iterations)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_counts_are_refused(bad):
    with pytest.raises(ValueError, match="steps"):
        minimize_lbfgs(_quadratic, jnp.zeros((3, 4)), steps=bad)
    with pytest.raises(ValueError, match="max_move"):
        minimize_lbfgs(_quadratic, jnp.zeros((3, 4)), steps=3, max_move=0.0)


def test_gradient_distance_closed_forms():
    a = {"w": jnp.array([1.0, 2.0]), "b": jnp.array([[2.0]])}
    b = {"w": jnp.array([0.0, 2.0]), "b": jnp.array([[0.0]])}
    # ||a - b||^2 / ||b||^2 = (1 + 0 + 4) / 4
    assert float(gradient_distance(a, b)) == pytest.approx(5.0 / 4.0)
    assert float(gradient_distance(b, b)) == 0.0
    twice = jax.tree.map(lambda x: 2.0 * x, a)
    assert float(gradient_distance(twice, a, kind="cosine")) == pytest.approx(0.0, abs=1e-7)
    neg = jax.tree.map(jnp.negative, a)
    assert float(gradient_distance(neg, a, kind="cosine")) == pytest.approx(2.0)
    e1 = {"w": jnp.array([1.0, 0.0])}
    e2 = {"w": jnp.array([0.0, 3.0])}
    assert float(gradient_distance(e1, e2, kind="cosine")) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="kind"):
        gradient_distance(a, b, kind="l1")


def test_total_variation_of_a_ramp():
    """Rows rising by 0.1: TV = sqrt(0.1^2 + eps^2) + eps (no horizontal change)."""
    eps = 1e-3
    ramp = jnp.broadcast_to(0.1 * jnp.arange(6.0)[:, None, None], (6, 5, 1))
    expected = np.sqrt(0.1**2 + eps**2) + eps
    assert float(total_variation(ramp, eps=eps)) == pytest.approx(expected, rel=1e-5)
    assert float(total_variation(jnp.zeros((4, 4, 1)), eps=eps)) == pytest.approx(2 * eps)
