"""Loss, per-example metric and prediction functions of the paper's two tasks, for any model."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pppml_jax import losses
from pppml_jax.metrics import correct_predictions, dice_from_logits

TASKS = {"classification": "accuracy", "segmentation": "dice"}


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
    """

    metric: str
    stateful: bool
    loss: Callable
    per_example: Callable
    predict: Callable


def _objective(task: str) -> tuple[Callable, Callable, Callable]:
    if task == "classification":
        return (
            lambda logits, batch: losses.cross_entropy(logits, batch["label"]),
            lambda logits, batch: correct_predictions(logits, batch["label"]),
            lambda logits: jnp.argmax(logits, axis=-1),
        )
    if task == "segmentation":
        return (
            lambda logits, batch: losses.dice_ce_loss(logits, batch["mask"]),
            lambda logits, batch: dice_from_logits(logits, batch["mask"]),
            lambda logits: jnp.argmax(logits, axis=-1),
        )
    raise ValueError(f"task={task!r} is unknown; use one of {', '.join(TASKS)}")


def task_functions(task: str, model: nn.Module, variables: dict[str, Any]) -> TaskFunctions:
    """Builds the functions of ``task`` for ``model`` whose initial variables are ``variables``.

    A model is stateful when ``variables`` holds collections other than ``params``; those are
    updated in training mode (``mutable``) and read in inference mode. Models take the input
    ``batch["image"]`` and a ``train`` keyword.
    """
    objective, score, decide = _objective(task)
    collections = sorted(set(variables) - {"params"})
    stateful = bool(collections)

    if stateful:

        def loss(params, state, batch):
            logits, new_state = model.apply(
                {"params": params, **state}, batch["image"], train=True, mutable=collections
            )
            return objective(logits, batch), dict(new_state)

        def per_example(params, state, batch):
            return score(
                model.apply({"params": params, **state}, batch["image"], train=False), batch
            )

        def predict(params, state, images):
            return decide(model.apply({"params": params, **state}, images, train=False))

    else:

        def loss(params, batch):
            return objective(model.apply({"params": params}, batch["image"], train=True), batch)

        def per_example(params, batch):
            return score(model.apply({"params": params}, batch["image"], train=False), batch)

        def predict(params, state, images):
            del state
            return decide(model.apply({"params": params}, images, train=False))

    return TaskFunctions(TASKS[task], stateful, loss, per_example, jax.jit(predict))
