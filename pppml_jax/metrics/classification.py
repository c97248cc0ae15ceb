"""Classification metrics: per-example correctness, accuracy and ROC AUC."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check_logits_labels(logits: jax.Array, labels: jax.Array) -> None:
    if logits.ndim != labels.ndim + 1 or logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits has shape {logits.shape} and labels {labels.shape}; expected logits "
            "[..., K] and integer labels [...]"
        )


def correct_predictions(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """1.0 where the arg-max class equals the label, else 0.0.

    Args:
      logits: ``[..., K]`` scores or logits.
      labels: ``[...]`` integer class indices.

    Returns:
      float32 array of shape ``labels.shape``.
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    _check_logits_labels(logits, labels)
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of examples whose arg-max class equals the label (a float32 scalar).

    Args:
      logits: ``[..., K]`` scores or logits.
      labels: ``[...]`` integer class indices.
    """
    return jnp.mean(correct_predictions(logits, labels))


def auc(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Area under the ROC curve: ``P(s_pos > s_neg) + P(s_pos = s_neg) / 2``.

    Computed from mid-ranks (the Mann-Whitney U statistic), so ties count one half and the cost
    is ``O(N log N)``. For two-class logits pass ``logits[:, 1] - logits[:, 0]`` or the softmax
    probability of class 1.

    Args:
      scores: ``[N]`` float scores, higher meaning "more likely positive".
      labels: ``[N]`` labels in ``{0, 1}`` (bool or int).

    Returns:
      float32 scalar in ``[0, 1]``; NaN when ``labels`` holds only one class (AUC undefined).

    Raises:
      ValueError: the inputs are not one-dimensional with equal lengths.
    """
    scores = jnp.asarray(scores, jnp.float32)
    labels = jnp.asarray(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(
            f"scores has shape {scores.shape} and labels {labels.shape}; both must be [N]"
        )
    positive = labels != 0
    ordered = jnp.sort(scores)
    below = jnp.searchsorted(ordered, scores, side="left")
    at_or_below = jnp.searchsorted(ordered, scores, side="right")
    mid_rank = (below + at_or_below + 1).astype(jnp.float32) / 2.0  # 1-based, ties averaged
    n_pos = jnp.sum(positive).astype(jnp.float32)
    n_neg = scores.shape[0] - n_pos
    rank_sum = jnp.sum(jnp.where(positive, mid_rank, 0.0))
    u_statistic = rank_sum - n_pos * (n_pos + 1.0) / 2.0
    denominator = n_pos * n_neg
    return jnp.where(denominator > 0, u_statistic / jnp.maximum(denominator, 1.0), jnp.nan)
