"""Fixtures of the attack tests: a tiny sigmoid LeNet on 16x16 CT crops (one compiled attack)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pppml_jax.experiments.privacy_data import synthetic_crops
from pppml_jax.models import LeNet

SIZE = 16
NUM_CLASSES = 3


@dataclass(frozen=True)
class Tiny:
    """A two-convolution sigmoid LeNet (2,235 parameters for 256 pixels) and its loss."""

    params: Any
    loss_fn: Any
    input_shape: tuple[int, int, int]
    num_classes: int
    images: np.ndarray  # [8, 16, 16, 1] synthetic CT crops in [0, 1]
    labels: np.ndarray  # [8] int32 in [0, NUM_CLASSES)


@pytest.fixture(scope="session")
def tiny() -> Tiny:
    net = LeNet(num_classes=NUM_CLASSES, features=(6, 6), strides=(2, 1))
    shape = (SIZE, SIZE, 1)
    params = net.init(jax.random.key(0), jnp.zeros((1, *shape)))["params"]

    def loss_fn(p, x, label):
        logits = net.apply({"params": p}, x[None])[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits, label)

    crops = synthetic_crops(8, size=SIZE, image_size=32, seed=0)
    labels = (np.arange(8) % NUM_CLASSES).astype(np.int32)
    return Tiny(params, loss_fn, shape, NUM_CLASSES, crops.images, labels)
