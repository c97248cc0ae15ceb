"""Loss, per-example metric and prediction functions of the paper's two tasks, for any model."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from pppml_jax import losses
from pppml_jax.metrics import correct_predictions, dice_from_logits

TASKS = {"classification": "accuracy", "segmentation": "dice"}
EMPTY_SCORES = {"one": 1.0, "exclude": float("nan")}
"""Dice of an image whose predicted and true masks are both empty: 1 (a perfect answer), or
excluded from the mean (NaN, which the federation's evaluation skips)."""


@dataclasses.dataclass(frozen=True)
class TaskFunctions:
    """Everything the federation and the report need to train and score one model on one task.

    Attributes:
      metric: the metric's name ("accuracy" or "dice").
      stateful: whether the model has state (BatchNorm ``batch_stats``).
      loss: ``loss(params, batch) -> scalar`` or, when stateful,
        ``loss(params, model_state, batch) -> (scalar, new_state)`` (training mode).
      per_example: ``[B]`` metric per example (inference mode), same calling convention.
      predict: ``predict(params, model_state, images) -> [B] labels or [B, H, W] masks``.
      batch_rng: the batch entry the loss reads its dropout key from (``"rng"``), or None when
        the model needs no randomness in training; pass it as ``FederationConfig.batch_rng``.
    """

    metric: str
    stateful: bool
    loss: Callable
    per_example: Callable
    predict: Callable
    batch_rng: str | None = None


BATCH_RNG = "rng"


def needs_dropout_rng(model: nn.Module, variables: dict[str, Any], sample: jax.Array) -> bool:
    """Whether ``model`` asks for a ``"dropout"`` PRNG stream in training mode."""
    collections = [k for k in variables if k != "params"]
    try:
        jax.eval_shape(
            lambda v, x: model.apply(v, x, train=True, mutable=collections), variables, sample
        )
    except flax.errors.InvalidRngError:
        return True
    return False


def _objective(task: str, empty_masks: str) -> tuple[Callable, Callable, Callable]:
    if task == "classification":
        return (
            lambda logits, batch: losses.cross_entropy(logits, batch["label"]),
            lambda logits, batch: correct_predictions(logits, batch["label"]),
            lambda logits: jnp.argmax(logits, axis=-1),
        )
    if task == "segmentation":
        return (
            lambda logits, batch: losses.dice_ce_loss(logits, batch["mask"]),
            lambda logits, batch: dice_from_logits(
                logits, batch["mask"], empty_score=EMPTY_SCORES[empty_masks]
            ),
            lambda logits: jnp.argmax(logits, axis=-1),
        )
    raise ValueError(f"task={task!r} is unknown; use one of {', '.join(TASKS)}")


def task_functions(
    task: str,
    model: nn.Module,
    variables: dict[str, Any],
    *,
    sample: jax.Array | None = None,
    empty_masks: str = "one",
) -> TaskFunctions:
    """Builds the functions of ``task`` for ``model`` whose initial variables are ``variables``.

    A model is stateful when ``variables`` holds collections other than ``params``; those are
    updated in training mode (``mutable``) and read in inference mode. Models take the input
    ``batch["image"]`` and a ``train`` keyword. When ``sample`` (a ``[1, ...]`` input) is given
    and the model uses dropout, the training loss reads its key from ``batch["rng"]``.
    ``empty_masks`` ("one" or "exclude", segmentation only): how an image whose predicted and
    true masks are both empty counts (:data:`EMPTY_SCORES`).
    """
    if empty_masks not in EMPTY_SCORES:
        raise ValueError(f"empty_masks={empty_masks!r} must be one of {sorted(EMPTY_SCORES)}")
    objective, score, decide = _objective(task, empty_masks)
    collections = sorted(set(variables) - {"params"})
    stateful = bool(collections)
    batch_rng = (
        BATCH_RNG if sample is not None and needs_dropout_rng(model, variables, sample) else None
    )

    def rngs(batch):
        if batch_rng is None:
            return {}
        return {"dropout": jax.random.wrap_key_data(batch[batch_rng])}

    def predict(params, state, images):
        """Decisions for ``images``; ``state`` is the model state (None when stateless)."""
        return decide(model.apply({"params": params, **(state or {})}, images, train=False))

    if stateful:

        def loss(params, state, batch):
            logits, new_state = model.apply(
                {"params": params, **state},
                batch["image"],
                train=True,
                mutable=collections,
                rngs=rngs(batch),
            )
            return objective(logits, batch), dict(new_state)

        def per_example(params, state, batch):
            return score(
                model.apply({"params": params, **state}, batch["image"], train=False), batch
            )

    else:

        def loss(params, batch):
            logits = model.apply({"params": params}, batch["image"], train=True, rngs=rngs(batch))
            return objective(logits, batch)

        def per_example(params, batch):
            return score(model.apply({"params": params}, batch["image"], train=False), batch)

    return TaskFunctions(TASKS[task], stateful, loss, per_example, jax.jit(predict), batch_rng)
