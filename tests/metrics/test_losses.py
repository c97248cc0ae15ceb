"""Cross-entropy, soft Dice and their sum against hand-computed values."""

import jax
import numpy as np
import pytest

from pppml_jax.losses import (
    cross_entropy,
    dice_ce_loss,
    soft_dice_loss,
    soft_dice_per_example,
)


def test_cross_entropy_hand_computed():
    logits = np.array([[2.0, 0.0], [0.0, 0.0]], np.float32)
    labels = np.array([0, 1])
    per_example = [np.log1p(np.exp(-2.0)), np.log(2.0)]
    assert float(cross_entropy(logits, labels)) == pytest.approx(np.mean(per_example), rel=1e-6)
    weighted = cross_entropy(logits, labels, weights=np.array([3.0, 1.0]))
    assert float(weighted) == pytest.approx((3 * per_example[0] + per_example[1]) / 4, rel=1e-6)
    assert float(cross_entropy(logits, labels, weights=np.zeros(2))) == 0.0
    with pytest.raises(ValueError, match="weights"):
        cross_entropy(logits, labels, weights=np.ones(3))


def test_cross_entropy_per_pixel_averages_pixels_then_examples():
    logits = np.zeros((2, 2, 2, 3), np.float32)
    logits[0, 0, 0] = [5.0, 0.0, 0.0]
    labels = np.zeros((2, 2, 2), int)
    first = (np.log1p(2 * np.exp(-5.0)) + 3 * np.log(3.0)) / 4
    assert float(cross_entropy(logits, labels)) == pytest.approx((first + np.log(3.0)) / 2, 1e-6)


def test_soft_dice_with_confident_logits_is_smoothed_hard_dice():
    big = 30.0  # softmax is one-hot to float precision
    logits = np.zeros((2, 2, 2, 2), np.float32)
    logits[..., 0] = big  # background everywhere ...
    logits[0, 0, :, 0], logits[0, 0, :, 1] = 0.0, big  # ... except two foreground pixels
    masks = np.zeros((2, 2, 2), int)
    masks[0, 0, 0] = 1  # one true pixel, overlapping
    # image 0: (2*1 + 1) / (2 + 1 + 1) = 0.75; image 1: empty and predicted empty -> 1
    np.testing.assert_allclose(soft_dice_per_example(logits, masks), [0.75, 1.0], rtol=1e-6)
    assert float(soft_dice_loss(logits, masks)) == pytest.approx(1 - 0.875, rel=1e-5)


def test_dice_ce_is_the_weighted_sum_and_has_a_useful_gradient():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 4, 2)).astype(np.float32)
    masks = rng.integers(0, 2, (3, 4, 4))
    total = dice_ce_loss(logits, masks, dice_weight=0.3, ce_weight=2.0)
    parts = 0.3 * soft_dice_loss(logits, masks) + 2.0 * cross_entropy(logits, masks)
    assert float(total) == pytest.approx(float(parts), rel=1e-6)
    grad = jax.grad(dice_ce_loss)(logits, masks)
    stepped = logits - 0.5 * np.asarray(grad)
    assert float(dice_ce_loss(stepped, masks)) < float(dice_ce_loss(logits, masks))
    with pytest.raises(ValueError, match="K >= 2"):
        soft_dice_loss(logits[..., :1], masks)
