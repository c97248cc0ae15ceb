"""fedavg_step, perfedavg_step (fo / hf / exact) and personalize against closed forms.

Two independent references: a quadratic loss, whose gradient and Hessian are known in closed
form, and logistic regression, whose gradient and Hessian are written out in float64 numpy here
(not derived by JAX), with the Hessian-free variant's finite difference recomputed in numpy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pppml_jax as pj

# ----------------------------------------------------------------------------- quadratic
# f(w; batch) = mean_i 0.5 (w - c_i)^T A_i (w - c_i): grad = mean_i A_i (w - c_i), Hess = mean A_i.


def quad_loss(w, batch):
    d = w[None, :] - batch["c"]
    return jnp.mean(0.5 * jnp.einsum("bi,bij,bj->b", d, batch["A"], d))


def make_quad_batch(rng, n, dim):
    m = rng.normal(size=(n, dim, dim))
    a = np.einsum("bij,bkj->bik", m, m) / dim + 0.5 * np.eye(dim)  # symmetric positive definite
    c = rng.normal(size=(n, dim))
    return {"A": a.astype(np.float32), "c": c.astype(np.float32)}


def quad_grad(w, batch):
    a, c = batch["A"].astype(np.float64), batch["c"].astype(np.float64)
    return np.mean(np.einsum("bij,bj->bi", a, w[None, :] - c), axis=0)


def quad_hess(batch):
    return batch["A"].astype(np.float64).mean(axis=0)


@pytest.fixture
def quad():
    rng = np.random.default_rng(1)
    dim = 4
    w = rng.normal(size=dim)
    return (
        w,
        make_quad_batch(rng, 3, dim),
        make_quad_batch(rng, 5, dim),
        make_quad_batch(rng, 2, dim),
    )


def test_fedavg_step_is_one_sgd_step(quad):
    w, batch, _, _ = quad
    lr = 0.3
    got = pj.fedavg_step(quad_loss, jnp.asarray(w, jnp.float32), batch, lr=lr)
    np.testing.assert_allclose(np.asarray(got), w - lr * quad_grad(w, batch), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["fo", "hf", "exact"])
def test_perfedavg_quadratic_closed_form(quad, variant):
    w, da, db, dc = quad
    alpha, beta = 0.1, 0.4
    adapted = w - alpha * quad_grad(w, da)
    g = quad_grad(adapted, db)
    if variant == "fo":
        expected = w - beta * g
    else:  # for a quadratic the Hessian-free finite difference is exact: d = Hess g
        expected = w - beta * (np.eye(len(w)) - alpha * quad_hess(dc)) @ g
    got = pj.perfedavg_step(
        quad_loss,
        jnp.asarray(w, jnp.float32),
        da,
        db,
        dc,
        alpha=alpha,
        beta=beta,
        variant=variant,
    )
    # float32 central differences lose about eps/delta ~ 6e-5 relative accuracy
    tol = 2e-4 if variant == "hf" else 1e-5
    np.testing.assert_allclose(np.asarray(got), expected, rtol=tol, atol=tol)


def test_variants_differ_when_curvature_matters(quad):
    w, da, db, dc = quad
    kw = {"alpha": 0.2, "beta": 0.5}
    fo = pj.perfedavg_step(quad_loss, jnp.asarray(w, jnp.float32), da, db, dc, variant="fo", **kw)
    ex = pj.perfedavg_step(
        quad_loss, jnp.asarray(w, jnp.float32), da, db, dc, variant="exact", **kw
    )
    assert float(jnp.max(jnp.abs(fo - ex))) > 1e-2


def test_batch_c_defaults_to_batch_a(quad):
    w, da, db, _ = quad
    w = jnp.asarray(w, jnp.float32)
    for variant in ("hf", "exact"):
        implicit = pj.perfedavg_step(quad_loss, w, da, db, alpha=0.1, beta=0.3, variant=variant)
        explicit = pj.perfedavg_step(quad_loss, w, da, db, da, alpha=0.1, beta=0.3, variant=variant)
        np.testing.assert_array_equal(np.asarray(implicit), np.asarray(explicit))


# ----------------------------------------------------------------------------- logistic regression


def logistic_loss(params, batch):
    z = batch["x"] @ params["w"] + params["b"]
    return jnp.mean(jnp.logaddexp(0.0, z) - batch["y"] * z)


def np_logistic_grad(w, b, batch):
    x, y = batch["x"].astype(np.float64), batch["y"].astype(np.float64)
    s = 1.0 / (1.0 + np.exp(-(x @ w + b)))
    return x.T @ (s - y) / len(y), np.mean(s - y, keepdims=True)


def np_logistic_hess(w, b, batch):
    """Hessian over the stacked vector (w, b)."""
    x = batch["x"].astype(np.float64)
    s = 1.0 / (1.0 + np.exp(-(x @ w + b)))
    xa = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    return (xa * (s * (1 - s))[:, None]).T @ xa / len(x)


def make_logistic_batch(rng, n, dim):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = (rng.uniform(size=n) < 0.5).astype(np.float32)
    return {"x": x, "y": y}


@pytest.mark.parametrize("variant", ["fo", "hf", "exact"])
def test_perfedavg_logistic_against_numpy(variant):
    rng = np.random.default_rng(7)
    dim, alpha, beta, delta = 6, 0.5, 0.8, 1e-2
    w, b = rng.normal(size=dim), 0.3
    da, db, dc = (make_logistic_batch(rng, n, dim) for n in (8, 12, 10))

    gw, gb = np_logistic_grad(w, b, da)
    w1, b1 = w - alpha * gw, b - alpha * gb[0]
    g = np.concatenate(np_logistic_grad(w1, b1, db))
    if variant == "fo":
        direction = g
    elif variant == "exact":
        direction = g - alpha * np_logistic_hess(w, b, dc) @ g
    else:  # the Hessian-free central difference, recomputed in float64
        plus = np.concatenate(np_logistic_grad(w + delta * g[:dim], b + delta * g[dim], dc))
        minus = np.concatenate(np_logistic_grad(w - delta * g[:dim], b - delta * g[dim], dc))
        direction = g - alpha * (plus - minus) / (2 * delta)
    expected = np.concatenate([w, [b]]) - beta * direction

    params = {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}
    got = pj.perfedavg_step(
        logistic_loss, params, da, db, dc, alpha=alpha, beta=beta, variant=variant, delta=delta
    )
    got = np.concatenate([np.asarray(got["w"]), [float(got["b"])]])
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-5)


def test_hf_converges_to_exact_as_delta_shrinks():
    rng = np.random.default_rng(3)
    dim = 5
    params = {"w": jnp.asarray(rng.normal(size=dim), jnp.float32), "b": jnp.asarray(0.1)}
    da, db = make_logistic_batch(rng, 16, dim), make_logistic_batch(rng, 16, dim)
    kw = {"alpha": 0.5, "beta": 1.0}
    exact = pj.perfedavg_step(logistic_loss, params, da, db, variant="exact", **kw)
    errors = []
    for delta in (0.5, 0.05):
        hf = pj.perfedavg_step(logistic_loss, params, da, db, variant="hf", delta=delta, **kw)
        errors.append(float(jnp.max(jnp.abs(hf["w"] - exact["w"]))))
    assert errors[1] < errors[0] / 10  # central differences: error O(delta^2)


def test_step_is_jittable_vmappable_and_keeps_dtypes():
    rng = np.random.default_rng(0)
    dim, clients = 3, 4
    batches = [make_logistic_batch(rng, 8, dim) for _ in range(clients)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    params = {"w": jnp.zeros((clients, dim), jnp.float32), "b": jnp.zeros((clients,), jnp.float32)}

    def step(p, b):
        return pj.perfedavg_step(logistic_loss, p, b, b, alpha=0.1, beta=0.2, variant="exact")

    batched = jax.jit(jax.vmap(step))(params, stacked)
    for k in range(clients):
        one = step(jax.tree.map(lambda x, k=k: x[k], params), batches[k])
        np.testing.assert_allclose(np.asarray(batched["w"][k]), np.asarray(one["w"]), atol=1e-6)
        assert one["w"].dtype == jnp.float32 and one["b"].dtype == jnp.float32


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant='second'"):
        pj.perfedavg_step(quad_loss, jnp.zeros(2), {}, {}, alpha=0.1, beta=0.1, variant="second")


# ----------------------------------------------------------------------------- personalize


def test_personalize_closed_form(quad):
    w, batch, _, _ = quad
    alpha, steps = 0.2, 3
    h = quad_hess(batch)
    c_star = np.linalg.solve(h, quad_grad(np.zeros_like(w), batch) * -1)  # minimiser
    expected = c_star + np.linalg.matrix_power(np.eye(len(w)) - alpha * h, steps) @ (w - c_star)
    got = pj.personalize(quad_loss, jnp.asarray(w, jnp.float32), batch, alpha=alpha, steps=steps)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


def test_personalize_zero_steps_and_batch_sequences(quad):
    w, da, db, _ = quad
    w = jnp.asarray(w, jnp.float32)
    np.testing.assert_array_equal(
        np.asarray(pj.personalize(quad_loss, w, da, alpha=0.1, steps=0)), w
    )
    two = pj.personalize(quad_loss, w, [da, db], alpha=0.1, steps=2)
    by_hand = pj.fedavg_step(quad_loss, pj.fedavg_step(quad_loss, w, da, lr=0.1), db, lr=0.1)
    np.testing.assert_allclose(np.asarray(two), np.asarray(by_hand), atol=1e-7)
    with pytest.raises(ValueError, match="got 1 batches for steps=2"):
        pj.personalize(quad_loss, w, [da], alpha=0.1, steps=2)
    with pytest.raises(ValueError, match="steps=-1"):
        pj.personalize(quad_loss, w, da, alpha=0.1, steps=-1)


def test_personalize_with_traced_steps_says_steps_must_be_static():
    loss = lambda w, b: 0.5 * jnp.sum((w - b) ** 2)  # noqa: E731
    w, b = jnp.zeros(2), jnp.ones(2)
    with pytest.raises(TypeError, match="static_argnames=\\('loss_fn', 'steps'\\)"):
        jax.jit(lambda s: pj.personalize(loss, w, b, alpha=0.1, steps=s))(2)
    step = jax.jit(pj.personalize, static_argnames=("loss_fn", "steps"))
    np.testing.assert_allclose(step(loss, w, b, alpha=0.5, steps=2), [0.75, 0.75], rtol=1e-6)
