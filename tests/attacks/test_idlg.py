"""iDLG and the update attack on a tiny sigmoid LeNet: recovery, determinism, restarts, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _settings import ATTACK

import pppml_jax as pj
from pppml_jax.attacks import Gradient, LocalUpdate, idlg, idlg_update

PSNR_RECOVERED = 30.0  # dB: the bar for a successful reconstruction


def _psnr(a, b):
    return float(pj.metrics.psnr(jnp.clip(jnp.asarray(a), 0, 1), jnp.asarray(b)))


def test_input_and_label_recovered_from_a_gradient(tiny):
    for i in (0, 1):  # labels 0 and 1 of a 3-class model
        x, label = tiny.images[i], int(tiny.labels[i])
        grads = Gradient(tiny.loss_fn)(tiny.params, jnp.asarray(x), jnp.asarray(label))
        rec = idlg(tiny.loss_fn, tiny.params, grads, input_shape=tiny.input_shape,
                   num_classes=tiny.num_classes, seed=0, **ATTACK)  # fmt: skip
        assert rec.label == label
        assert rec.image.shape == tiny.input_shape
        assert rec.distance <= 1e-6
        assert _psnr(rec.image, x) >= PSNR_RECOVERED


def test_same_seed_same_result_other_seed_other_start(tiny):
    x, label = tiny.images[2], int(tiny.labels[2])
    grads = Gradient(tiny.loss_fn)(tiny.params, jnp.asarray(x), jnp.asarray(label))
    opts = {**ATTACK, "steps": 40, "tol": 0.0}  # a partial run: the start still shows
    kwargs = {"input_shape": tiny.input_shape, "num_classes": tiny.num_classes, **opts}
    a = idlg(tiny.loss_fn, tiny.params, grads, seed=7, **kwargs)
    b = idlg(tiny.loss_fn, tiny.params, grads, seed=7, **kwargs)
    c = idlg(tiny.loss_fn, tiny.params, grads, seed=8, **kwargs)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.objectives == b.objectives
    assert not np.array_equal(a.image, c.image)


def test_restarts_keep_the_lowest_objective(tiny):
    x, label = tiny.images[3], int(tiny.labels[3])
    grads = Gradient(tiny.loss_fn)(tiny.params, jnp.asarray(x), jnp.asarray(label))
    opts = {**ATTACK, "steps": 40, "tol": 0.0, "restarts": 3}
    rec = idlg(tiny.loss_fn, tiny.params, grads, input_shape=tiny.input_shape,
               num_classes=tiny.num_classes, seed=1, **opts)  # fmt: skip
    assert len(rec.objectives) == 3  # tol=0 is never reached: every restart runs
    assert rec.restart == int(np.argmin(rec.objectives))
    assert rec.objective == min(rec.objectives)
    # Stopping at tol skips the remaining restarts.
    done = idlg(tiny.loss_fn, tiny.params, grads, input_shape=tiny.input_shape,
                num_classes=tiny.num_classes, seed=1, **{**ATTACK, "restarts": 3})  # fmt: skip
    assert len(done.objectives) == 1


def test_input_recovered_from_a_multi_step_update(tiny):
    x, label = tiny.images[4], int(tiny.labels[4])
    observe = LocalUpdate(tiny.loss_fn, 3, 0.5)
    update = observe(tiny.params, jnp.asarray(x), jnp.asarray(label))
    rec = idlg_update(tiny.loss_fn, tiny.params, update, input_shape=tiny.input_shape,
                      num_classes=tiny.num_classes, local_steps=3, lr=0.5, seed=0,
                      **ATTACK)  # fmt: skip
    assert rec.label == label
    assert _psnr(rec.image, x) >= PSNR_RECOVERED
    # The simulated update of the reconstruction matches the observed one.
    again = observe(tiny.params, jnp.asarray(rec.image), jnp.asarray(rec.label))
    err = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree.leaves(again), jax.tree.leaves(update), strict=True))  # fmt: skip
    scale = max(float(jnp.max(jnp.abs(b))) for b in jax.tree.leaves(update))
    assert err <= 1e-2 * scale


def test_a_given_label_is_used(tiny):
    x = tiny.images[0]
    grads = Gradient(tiny.loss_fn)(tiny.params, jnp.asarray(x), jnp.asarray(0))
    rec = idlg(tiny.loss_fn, tiny.params, grads, input_shape=tiny.input_shape,
               num_classes=tiny.num_classes, label=2, **{**ATTACK, "steps": 5})  # fmt: skip
    assert rec.label == 2


def _bad_call(tiny, grads, **changes):
    kwargs = {"input_shape": tiny.input_shape, "num_classes": tiny.num_classes, "steps": 3}
    kwargs.update(changes)
    return idlg(tiny.loss_fn, tiny.params, grads, **kwargs)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"num_classes": 5}, "num_classes=5"),
        ({"label": 3}, "label=3"),
        ({"steps": 0}, "steps=0"),
        ({"restarts": 0}, "restarts=0"),
        ({"distance": "l1"}, "distance='l1'"),
        ({"init": "zeros"}, "init='zeros'"),
        ({"solver": "adam"}, "solver='adam'"),
        ({"tv_weight": -1.0}, "tv_weight"),
        ({"max_move": 0.0}, "max_move"),
        ({"input_shape": (256,), "tv_weight": 0.1}, "channels-last"),
    ],
)
def test_bad_options_are_refused(tiny, changes, match):
    grads = Gradient(tiny.loss_fn)(tiny.params, jnp.asarray(tiny.images[0]), jnp.asarray(0))
    with pytest.raises(ValueError, match=match):
        _bad_call(tiny, grads, **changes)


def test_bad_observations_are_refused(tiny):
    grads = Gradient(tiny.loss_fn)(tiny.params, jnp.asarray(tiny.images[0]), jnp.asarray(0))
    leaves, treedef = jax.tree.flatten(grads)
    with pytest.raises(ValueError, match="tree structure"):
        _bad_call(tiny, {"only": leaves[0]})
    nan = jax.tree.unflatten(treedef, [leaves[0].at[0].set(jnp.nan), *leaves[1:]])
    with pytest.raises(ValueError, match="NaN"):
        _bad_call(tiny, nan)
    wrong = jax.tree.unflatten(treedef, [jnp.zeros(3), *leaves[1:]])
    with pytest.raises(ValueError, match="shape"):
        _bad_call(tiny, wrong)
    with pytest.raises(ValueError, match="local_steps"):
        idlg_update(tiny.loss_fn, tiny.params, grads, input_shape=tiny.input_shape,
                    num_classes=tiny.num_classes, local_steps=0, lr=0.1)  # fmt: skip
