"""Dice similarity of binary masks, per image or per volume, with a stated empty-mask rule."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

EMPTY_SCORE = 1.0
"""Dice of a prediction and a truth that are both empty: 1.0 (they agree exactly)."""


def _normalise_axes(axes: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    if not axes:
        raise ValueError(f"{name}=() is empty; give the image axes, e.g. (-2, -1)")
    out = []
    for axis in axes:
        if not -ndim <= axis < ndim:
            raise ValueError(f"{name}={axes} is out of range for arrays with {ndim} dimensions")
        out.append(axis % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}={axes} repeats an axis")
    return tuple(out)


def dice(
    pred_mask: jax.Array,
    true_mask: jax.Array,
    *,
    axes: int | Sequence[int] = (-2, -1),
    empty_score: float = EMPTY_SCORE,
) -> jax.Array:
    """Dice coefficient ``2 |X and Y| / (|X| + |Y|)`` of binary masks, one value per image.

    Empty-mask rule: when both masks of an image are empty the Dice is ``empty_score``
    (default 1.0: predicting "no lesion" on a lesion-free slice is a perfect answer); when only
    one is empty the formula gives 0. Pass ``empty_score=float("nan")`` to exclude such images
    from a ``jnp.nanmean``. This is the plain Dice, not the pooled F-beta (beta = 1.25) that the
    published code logged as Dice (docs/method.md 3.4).

    Args:
      pred_mask: ``[..., H, W]`` (or any shape) bool / int / float; non-zero is foreground.
        Threshold probabilities before calling.
      true_mask: same shape as ``pred_mask``.
      axes: the axes of one image (``(-3, -2, -1)`` for a Dice per volume).
      empty_score: the value when both masks are empty.

    Returns:
      float32 array of the remaining (batch) axes, values in ``[0, 1]``.

    Raises:
      ValueError: the shapes differ or ``axes`` is invalid.
    """
    pred_mask = jnp.asarray(pred_mask)
    true_mask = jnp.asarray(true_mask)
    if pred_mask.shape != true_mask.shape:
        raise ValueError(
            f"pred_mask has shape {pred_mask.shape} but true_mask has shape {true_mask.shape}; "
            "they must be equal"
        )
    axes = _normalise_axes(axes, pred_mask.ndim, "axes")
    pred = (pred_mask != 0).astype(jnp.float32)
    true = (true_mask != 0).astype(jnp.float32)
    overlap = jnp.sum(pred * true, axis=axes)
    total = jnp.sum(pred, axis=axes) + jnp.sum(true, axis=axes)
    safe_total = jnp.where(total > 0, total, 1.0)
    return jnp.where(total > 0, 2.0 * overlap / safe_total, jnp.float32(empty_score))


def dice_from_logits(
    logits: jax.Array, true_mask: jax.Array, *, empty_score: float = EMPTY_SCORE
) -> jax.Array:
    """Dice per image of the arg-max prediction of per-pixel logits.

    Args:
      logits: ``[B, H, W, K]`` logits; class 0 is background, any other class is foreground.
      true_mask: ``[B, H, W]`` integer mask (non-zero is foreground).
      empty_score: the value when both masks are empty (see :func:`dice`).

    Returns:
      ``[B]`` float32 Dice per image.
    """
    logits = jnp.asarray(logits)
    if logits.ndim != jnp.ndim(true_mask) + 1:
        raise ValueError(
            f"logits has shape {logits.shape} and true_mask {jnp.shape(true_mask)}; expected "
            "logits [..., H, W, K] and true_mask [..., H, W]"
        )
    pred = jnp.argmax(logits, axis=-1)
    return dice(pred, true_mask, empty_score=empty_score)
