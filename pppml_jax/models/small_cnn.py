"""SmallCNN: a two-convolution classifier for quick federations, benchmarks and tests."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class SmallCNN(nn.Module):
    """Conv3x3-ReLU-MaxPool blocks, global average pooling, then a dense classifier.

    With the defaults (``features=(16, 32)``, ``hidden=64``, ``num_classes=2``) and one input
    channel it has 7,042 parameters.

    Attributes:
      features: output channels of each convolution block.
      hidden: width of the dense layer before the classifier (0 for none).
      num_classes: number of output logits.

    Input ``x``: ``[B, H, W, C]`` float32. Output: ``[B, num_classes]`` logits.
    """

    features: Sequence[int] = (16, 32)
    hidden: int = 64
    num_classes: int = 2

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or normalisation: the same function in training and evaluation
        for width in self.features:
            x = nn.Conv(width, (3, 3), padding="SAME")(x)
            x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))
        if self.hidden:
            x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_classes)(x)
