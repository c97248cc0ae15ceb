"""Training losses: cross-entropy with integer labels, soft Dice, and soft Dice + cross-entropy.

Every loss returns a float32 scalar, is pure and jit-/vmap-able, and takes optional per-example
``weights`` (``[B]``, e.g. the 0/1 mask of a padded batch): the loss is then
``sum_b w_b l_b / sum_b w_b`` (0 when every weight is 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _check_logits_labels(logits: jax.Array, labels: jax.Array, name: str) -> None:
    if logits.ndim != labels.ndim + 1 or logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits has shape {logits.shape} and {name} {labels.shape}; expected logits "
            f"[B, ..., K] and integer {name} [B, ...]"
        )
    if logits.ndim < 2:
        raise ValueError(f"logits has shape {logits.shape}; expected [B, ..., K]")


def _weighted_mean(per_example: jax.Array, weights: jax.Array | None) -> jax.Array:
    if weights is None:
        return jnp.mean(per_example)
    weights = jnp.asarray(weights, per_example.dtype)
    if weights.shape != per_example.shape:
        raise ValueError(
            f"weights has shape {weights.shape}; expected one weight per example, "
            f"shape {per_example.shape}"
        )
    total = jnp.sum(weights)
    return jnp.sum(weights * per_example) / jnp.where(total > 0, total, 1.0)


def cross_entropy_per_example(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy averaged over all but the first axis: ``[B, ..., K] -> [B]``.

    Args:
      logits: ``[B, K]`` (classification) or ``[B, H, W, K]`` (per-pixel) logits.
      labels: ``[B]`` or ``[B, H, W]`` integer classes in ``[0, K)``.
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    _check_logits_labels(logits, labels, "labels")
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))
    return jnp.mean(losses.reshape((losses.shape[0], -1)), axis=-1)


def cross_entropy(
    logits: jax.Array, labels: jax.Array, *, weights: jax.Array | None = None
) -> jax.Array:
    """Mean softmax cross-entropy ``-log softmax(logits)[label]`` (nats).

    Args:
      logits: ``[B, K]`` or ``[B, H, W, K]`` logits.
      labels: ``[B]`` or ``[B, H, W]`` integer classes.
      weights: optional ``[B]`` per-example weights.

    Returns:
      float32 scalar: the mean over pixels of each example, then the (weighted) mean over
      examples.
    """
    return _weighted_mean(cross_entropy_per_example(logits, labels), weights)


def soft_dice_per_example(logits: jax.Array, masks: jax.Array, *, smooth: float = 1.0) -> jax.Array:
    """Soft Dice ``(2 sum p y + s) / (sum p + sum y + s)`` of each image, mean over classes 1..K-1.

    ``p`` is the softmax probability of a foreground class and ``y`` its one-hot truth, summed
    over the pixels of one image; ``s = smooth`` keeps empty images finite (an empty truth and an
    all-background prediction score 1).

    Args:
      logits: ``[B, H, W, K]`` per-pixel logits, ``K >= 2`` (class 0 is background).
      masks: ``[B, H, W]`` integer classes.
      smooth: the additive smoothing ``s`` in pixels.

    Returns:
      ``[B]`` soft Dice per image, in ``(0, 1]``.
    """
    logits, masks = jnp.asarray(logits), jnp.asarray(masks)
    _check_logits_labels(logits, masks, "masks")
    num_classes = logits.shape[-1]
    if num_classes < 2:
        raise ValueError(
            f"logits has {num_classes} class; soft Dice needs K >= 2 softmax classes "
            "(background and foreground)"
        )
    probs = jax.nn.softmax(logits, axis=-1)[..., 1:]
    truth = jax.nn.one_hot(masks.astype(jnp.int32), num_classes, dtype=probs.dtype)[..., 1:]
    spatial = tuple(range(1, logits.ndim - 1))
    overlap = jnp.sum(probs * truth, axis=spatial)
    total = jnp.sum(probs, axis=spatial) + jnp.sum(truth, axis=spatial)
    return jnp.mean((2.0 * overlap + smooth) / (total + smooth), axis=-1)


def soft_dice_loss(
    logits: jax.Array,
    masks: jax.Array,
    *,
    smooth: float = 1.0,
    weights: jax.Array | None = None,
) -> jax.Array:
    """``1 - soft Dice`` (see :func:`soft_dice_per_example`), (weighted) mean over images."""
    return _weighted_mean(1.0 - soft_dice_per_example(logits, masks, smooth=smooth), weights)


def dice_ce_loss(
    logits: jax.Array,
    masks: jax.Array,
    *,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    smooth: float = 1.0,
    weights: jax.Array | None = None,
) -> jax.Array:
    """``dice_weight * (1 - soft Dice) + ce_weight * cross-entropy`` for segmentation.

    Args:
      logits: ``[B, H, W, K]`` per-pixel logits (``K = 2`` for binary segmentation).
      masks: ``[B, H, W]`` integer classes.
      dice_weight: weight of the soft-Dice term.
      ce_weight: weight of the per-pixel cross-entropy term.
      smooth: soft-Dice smoothing in pixels.
      weights: optional ``[B]`` per-example weights.

    Returns:
      float32 scalar.

    Example::

        def loss_fn(params, model_state, batch):
            logits, updates = model.apply({"params": params, **model_state}, batch["image"],
                                          train=True, mutable=["batch_stats"])
            return dice_ce_loss(logits, batch["mask"]), updates
    """
    per_example = dice_weight * (
        1.0 - soft_dice_per_example(logits, masks, smooth=smooth)
    ) + ce_weight * cross_entropy_per_example(logits, masks)
    return _weighted_mean(per_example, weights)
