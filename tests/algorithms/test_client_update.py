"""Minibatch sampling and the optax-based client update against the single local steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pppml_jax as pj
from pppml_jax.algorithms.batching import sample_indices, take_batch
from pppml_jax.algorithms.client_update import make_client_update, perfedavg_rule, sgd_rule


def stateful(loss_fn):
    return lambda p, s, b: (loss_fn(p, b), s)


def logistic_loss(params, batch):
    z = batch["x"] @ params["w"] + params["b"]
    return jnp.mean(jnp.logaddexp(0.0, z) - batch["y"] * z)


def padded_client(rng, n, capacity, dim=4):
    x = np.zeros((capacity, dim), np.float32)
    y = np.zeros((capacity,), np.float32)
    x[:n] = rng.normal(size=(n, dim))
    y[:n] = rng.uniform(size=n) < 0.5
    return {"x": jnp.asarray(x), "y": jnp.asarray(y)}


@pytest.mark.parametrize("n", [1, 5, 16, 40])
def test_sample_indices_only_real_examples(n):
    key = jax.random.key(0)
    idx = np.asarray(sample_indices(key, n, 64, 16))
    assert idx.shape == (16,)
    assert idx.min() >= 0 and idx.max() < n
    if n >= 16:
        assert len(set(idx.tolist())) == 16  # without replacement
    else:
        assert set(idx.tolist()) == set(range(n))  # every real example, repeated cyclically


def test_sample_indices_ignore_padding_length():
    key = jax.random.key(3)
    for n in (7, 30):
        a = sample_indices(key, n, 32, 8)
        b = sample_indices(key, n, 500, 8)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sample_indices_are_uniform():
    counts = np.zeros(10)
    for i in range(2000):
        counts[np.asarray(sample_indices(jax.random.key(i), 10, 12, 3))] += 1
    expected = 2000 * 3 / 10
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 27.9  # 99.9% quantile of chi-square with 9 degrees of freedom


def test_one_perfedavg_step_equals_perfedavg_step():
    rng = np.random.default_rng(0)
    data, n = padded_client(rng, 20, 32), 20
    params = {"w": jnp.asarray(rng.normal(size=4), jnp.float32), "b": jnp.zeros(())}
    alpha, beta, batch = 0.3, 0.7, 5
    for variant in ("fo", "hf", "exact"):
        rule = perfedavg_rule(alpha=alpha, variant=variant)
        update = make_client_update(
            stateful(logistic_loss), rule, optax.sgd(beta), local_steps=1, batch_size=batch
        )
        key = jax.random.key(11)
        got = update(params, None, data, n, key).params
        # the batches the client drew: step 0 uses fold_in(key, 0), split into the rule's batches
        keys = jax.random.split(jax.random.fold_in(key, 0), rule.batches_per_step)
        batches = [take_batch(data, sample_indices(k, n, 32, batch)) for k in keys]
        expected = pj.perfedavg_step(
            logistic_loss, params, *batches, alpha=alpha, beta=beta, variant=variant
        )
        for leaf in ("w", "b"):
            np.testing.assert_allclose(
                np.asarray(got[leaf]), np.asarray(expected[leaf]), rtol=1e-6, atol=1e-7
            )


def test_sgd_client_update_is_repeated_fedavg_steps():
    rng = np.random.default_rng(1)
    data, n = padded_client(rng, 25, 25), 25
    params = {"w": jnp.zeros(4), "b": jnp.zeros(())}
    lr, steps, batch = 0.4, 3, 8
    update = make_client_update(
        stateful(logistic_loss), sgd_rule(), optax.sgd(lr), local_steps=steps, batch_size=batch
    )
    key = jax.random.key(2)
    got = update(params, None, data, n, key)
    expected, losses = params, []
    for t in range(steps):
        (k,) = jax.random.split(jax.random.fold_in(key, t), 1)
        b = take_batch(data, sample_indices(k, n, 25, batch))
        losses.append(float(logistic_loss(expected, b)))
        expected = pj.fedavg_step(logistic_loss, expected, b, lr=lr)
    np.testing.assert_allclose(np.asarray(got.params["w"]), np.asarray(expected["w"]), atol=1e-6)
    np.testing.assert_allclose(float(got.loss), np.mean(losses), rtol=1e-5)


def test_unrolled_equals_scan():
    rng = np.random.default_rng(2)
    data = padded_client(rng, 30, 40)
    params = {"w": jnp.asarray(rng.normal(size=4), jnp.float32), "b": jnp.zeros(())}
    kw = {"local_steps": 4, "batch_size": 6}
    rule = perfedavg_rule(alpha=0.1, variant="hf")
    unrolled = make_client_update(
        stateful(logistic_loss), rule, optax.adam(0.05), unroll=True, **kw
    )
    rolled = make_client_update(stateful(logistic_loss), rule, optax.adam(0.05), unroll=False, **kw)
    key = jax.random.key(5)
    a = jax.jit(unrolled)(params, None, data, 30, key)
    b = jax.jit(rolled)(params, None, data, 30, key)
    np.testing.assert_allclose(np.asarray(a.params["w"]), np.asarray(b.params["w"]), atol=1e-6)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="local_steps=0"):
        make_client_update(
            stateful(logistic_loss), sgd_rule(), optax.sgd(0.1), local_steps=0, batch_size=4
        )
    with pytest.raises(ValueError, match="alpha=0"):
        perfedavg_rule(alpha=0)
