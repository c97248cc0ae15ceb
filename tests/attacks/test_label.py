"""iDLG label inference: exact on random initialisations, a closed form, the output layer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pppml_jax as pj
from pppml_jax.attacks import LocalUpdate, class_scores, infer_label, last_layer_kernel
from pppml_jax.models import LeNet


def _lenet_case(num_classes, activation, init_range):
    net = LeNet(num_classes=num_classes, activation=activation, init_range=init_range)

    def loss_fn(p, x, label):
        logits = net.apply({"params": p}, x[None])[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits, label)

    @jax.jit
    def scores_and_label(seed):
        k_init, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
        params = net.init(k_init, jnp.zeros((1, 32, 32, 1)))["params"]
        x = jax.random.uniform(k_x, (32, 32, 1))
        label = jax.random.randint(k_y, (), 0, num_classes)
        grads = jax.grad(loss_fn)(params, x, label)
        return class_scores(grads), label

    return scores_and_label


@pytest.mark.parametrize(
    ("num_classes", "activation", "init_range"),
    [(2, "sigmoid", 0.5), (10, "sigmoid", 0.5), (100, "sigmoid", 0.5), (10, "relu", None)],
)
def test_sign_rule_is_exact_on_random_initialisations(num_classes, activation, init_range):
    """48 seeds per case: new weights, input and label each time; the rule never misses."""
    case = _lenet_case(num_classes, activation, init_range)
    pairs = [case(seed) for seed in range(48)]  # one compilation, 48 fresh initialisations
    scores = np.stack([np.asarray(s) for s, _ in pairs])
    labels = np.array([int(y) for _, y in pairs])
    assert np.array_equal(np.argmin(scores, axis=1), labels)
    # The rule's premise: exactly one negative column (ReLU may zero a whole column).
    negative = (scores < 0).sum(axis=1)
    assert np.all(negative == 1)
    if init_range is not None:
        assert len(set(labels.tolist())) > 1  # the labels really vary


def test_every_class_is_recovered_from_the_python_api():
    net = LeNet(num_classes=7)
    params = net.init(jax.random.key(3), jnp.zeros((1, 32, 32, 1)))["params"]
    x = jax.random.uniform(jax.random.key(4), (32, 32, 1))

    def loss_fn(p, x, label):
        return optax.softmax_cross_entropy_with_integer_labels(
            net.apply({"params": p}, x[None])[0], label
        )

    grad = jax.jit(jax.grad(loss_fn))
    for label in range(7):
        assert infer_label(grad(params, x, label)) == label


def test_class_scores_match_the_closed_form_of_a_dense_layer():
    """One dense layer on non-negative h: column c sums to sum(h) * (softmax(z)_c - y_c)."""
    rng = np.random.default_rng(0)
    h = rng.uniform(0, 1, 20).astype(np.float32)
    params = {"Dense_0": {"kernel": rng.normal(size=(20, 5)).astype(np.float32),
                          "bias": rng.normal(size=5).astype(np.float32)}}  # fmt: skip

    def loss_fn(p, label):
        z = h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
        return optax.softmax_cross_entropy_with_integer_labels(z, label)

    z = h @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
    probs = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    for label in range(5):
        expected = h.sum() * (probs - np.eye(5)[label])
        got = class_scores(jax.grad(loss_fn)(params, label))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert infer_label(jax.grad(loss_fn)(params, label)) == label


def test_rule_holds_for_a_multi_step_update(tiny):
    """theta_0 - theta_K is a positive sum of the example's gradients: same sign rule."""
    update = jax.jit(LocalUpdate(tiny.loss_fn, 4, 0.5))
    for x, label in zip(tiny.images[:3], tiny.labels[:3], strict=True):
        assert infer_label(update(tiny.params, jnp.asarray(x), jnp.asarray(label))) == label


def test_output_kernel_is_found_in_layer_order_not_key_order():
    out = np.ones((4, 3), np.float32)
    grads = {"z_first": {"kernel": np.zeros((2, 2), np.float32)}, "a_last": {"kernel": out}}
    assert last_layer_kernel(grads).shape == (4, 3)
    assert np.all(np.asarray(last_layer_kernel(grads)) == 1)  # not the sorted-first leaf
    picked = last_layer_kernel(grads, path="z_first/kernel")
    assert picked.shape == (2, 2)
    with pytest.raises(ValueError, match="names no 2-D leaf"):
        last_layer_kernel(grads, path="a_last/bias")
    with pytest.raises(ValueError, match="no 2-D leaf"):
        infer_label({"w": np.zeros(3, np.float32)})


def test_available_through_the_lazy_package():
    assert pj.attacks.infer_label is infer_label
