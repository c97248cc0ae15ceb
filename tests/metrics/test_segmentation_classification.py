"""Dice (with its empty-mask rule), accuracy and AUC against hand-computed values."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pppml_jax.metrics import accuracy, auc, correct_predictions, dice, dice_from_logits


def test_dice_hand_computed_per_image():
    pred = np.array([[[1, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]], [[1, 0, 0], [0, 0, 0]]])
    true = np.array([[[1, 0, 0], [1, 0, 0]], [[0, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]])
    # image 0: |X and Y| = 1, |X| = 2, |Y| = 2 -> 2 / 4; image 1: both empty -> 1; image 2: 0
    np.testing.assert_allclose(dice(pred, true), [0.5, 1.0, 0.0])
    excluded = dice(pred, true, empty_score=float("nan"))
    assert np.isnan(excluded[1]) and float(jnp.nanmean(excluded)) == pytest.approx(0.25)


def test_dice_per_volume_and_non_binary_labels():
    pred = np.zeros((2, 3, 4, 4), int)
    true = np.zeros((2, 3, 4, 4), int)
    pred[0, 0, :2, :2] = 2  # any non-zero value is foreground: 4 voxels
    true[0, 1, :2, :2] = 1  # 4 other voxels, no overlap
    true[0, 0, 0, 0] = 1  # one overlapping voxel
    np.testing.assert_allclose(dice(pred, true, axes=(-3, -2, -1)), [2 * 1 / (4 + 5), 1.0])
    assert jax.jit(dice)(pred, true).shape == (2, 3)


def test_dice_checks_shapes_and_axes():
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="out of range"):
        dice(np.zeros((4, 4)), np.zeros((4, 4)), axes=(-3,))


def test_dice_from_logits_uses_the_argmax_class():
    logits = np.zeros((1, 2, 2, 2), np.float32)
    logits[0, 0, 0] = [0.0, 3.0]  # foreground
    logits[0, 1, 1] = [0.0, 1.0]  # foreground
    mask = np.array([[[1, 0], [0, 0]]])
    np.testing.assert_allclose(dice_from_logits(logits, mask), [2 * 1 / (2 + 1)])


def test_accuracy_and_correct_predictions():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0], [0.1, 0.2]])
    labels = np.array([0, 1, 1, 0])
    np.testing.assert_array_equal(correct_predictions(logits, labels), [1, 1, 0, 0])
    assert float(accuracy(logits, labels)) == 0.5
    with pytest.raises(ValueError, match="labels"):
        accuracy(logits, labels[:3])


def auc_by_pairs(scores, labels):
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_hand_computed_and_against_pair_counting():
    assert float(auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))) == 0.75
    assert float(auc(np.array([0.3, 0.3, 0.3]), np.array([0, 1, 1]))) == 0.5  # ties count 1/2
    assert float(auc(np.array([1.0, 2.0]), np.array([0, 1]))) == 1.0
    assert float(auc(np.array([1.0, 2.0]), np.array([1, 0]))) == 0.0
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=60), 1)  # rounding creates many ties
    labels = rng.integers(0, 2, 60)
    assert float(jax.jit(auc)(scores, labels)) == pytest.approx(auc_by_pairs(scores, labels), 1e-6)


def test_auc_is_undefined_for_a_single_class():
    assert np.isnan(auc(np.array([0.2, 0.9]), np.array([1, 1])))
    with pytest.raises(ValueError, match=r"\[N\]"):
        auc(np.zeros((2, 2)), np.zeros((2, 2)))
