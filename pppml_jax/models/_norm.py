"""Normalisation layers by name, shared by the paper's networks."""

from __future__ import annotations

import math

import flax.linen as nn

NORMS = ("batch", "group", "none")


def normalization(norm: str, train: bool, momentum: float, channels: int):
    """The normalisation layer for ``norm``: BatchNorm, GroupNorm (8 groups or fewer) or none.

    GroupNorm and "none" keep no running statistics, so a model using them has no
    ``batch_stats`` and behaves the same in training and evaluation.
    """
    if norm == "batch":
        return nn.BatchNorm(use_running_average=not train, momentum=momentum)
    if norm == "group":
        return nn.GroupNorm(num_groups=math.gcd(channels, 8))
    if norm == "none":
        return lambda x: x
    raise ValueError(f"norm={norm!r} is not one of {NORMS}")
