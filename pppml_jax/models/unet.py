"""UNet2D: the paper's 2D U-Net for lung-infection segmentation ([conv3x3-BN-ReLU] x 2 blocks)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from pppml_jax.models._norm import NORMS, normalization


class ConvBlock(nn.Module):
    """Two [conv3x3 - norm - ReLU] layers with ``features`` output channels.

    Convolutions have no bias when a normalisation follows (it would be cancelled).

    Attributes:
      features: output channels of both convolutions.
      bn_momentum: running-average decay of BatchNorm (0.9 equals PyTorch's momentum 0.1).
      norm: ``"batch"`` (the paper), ``"group"`` or ``"none"``.

    Input ``x``: ``[B, H, W, C]``; output ``[B, H, W, features]``.
    """

    features: int
    bn_momentum: float = 0.9
    norm: str = "batch"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for _ in range(2):
            x = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=self.norm == "none")(x)
            x = normalization(self.norm, train, self.bn_momentum, self.features)(x)
            x = nn.relu(x)
        return x


class UNet2D(nn.Module):
    """A 2D U-Net: ``levels`` down-sampling steps, widths doubling from ``features``.

    Encoder level ``i`` (``i = 0 .. levels-1``) is a :class:`ConvBlock` of ``features * 2**i``
    channels followed by 2x2 max pooling; the bottleneck has ``features * 2**levels`` channels;
    each decoder level up-samples with a 2x2 stride-2 transposed convolution, concatenates the
    encoder's output of the same resolution and applies a :class:`ConvBlock`; a 1x1 convolution
    gives the logits. With the defaults (4 levels, 16 features, 3 input channels, 2 classes) it
    has 1,942,594 parameters, the paper's "about 1.94M" (docs/method.md 2.2).

    BatchNorm statistics live in the ``batch_stats`` collection: initialise with
    ``variables = model.init(key, x)``, train with
    ``logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])``.
    Running averages lag behind parameters that change fast (large learning rates, or a fresh
    federated average): refresh them with a few ``train=True`` passes before evaluating, or use
    ``norm="group"``, which keeps no statistics (same parameter count).

    Attributes:
      num_classes: output channels (logits per pixel); 2 for binary segmentation with softmax.
      features: channels of the first level.
      levels: number of 2x2 poolings (the input's height and width must be divisible by
        ``2**levels``).
      bn_momentum: BatchNorm running-average decay.
      norm: ``"batch"`` (default, the paper's), ``"group"`` or ``"none"``.

    Input ``x``: ``[B, H, W, C]`` float32. Output: ``[B, H, W, num_classes]`` logits.
    """

    num_classes: int = 2
    features: int = 16
    levels: int = 4
    bn_momentum: float = 0.9
    norm: str = "batch"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r} is not one of {NORMS}")
        if x.ndim != 4:
            raise ValueError(f"UNet2D expects x of shape [B, H, W, C], got shape {x.shape}")
        factor = 2**self.levels
        if x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(
                f"UNet2D with levels={self.levels} needs H and W divisible by {factor}, got "
                f"{x.shape[1]}x{x.shape[2]}; resize or pad the images, or use fewer levels"
            )
        skips = []
        for level in range(self.levels):
            x = ConvBlock(self.features * 2**level, self.bn_momentum, self.norm)(x, train)
            skips.append(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = ConvBlock(self.features * 2**self.levels, self.bn_momentum, self.norm)(x, train)
        for level in reversed(range(self.levels)):
            width = self.features * 2**level
            x = nn.ConvTranspose(width, (2, 2), strides=(2, 2), padding="VALID")(x)
            x = jnp.concatenate([x, skips[level]], axis=-1)
            x = ConvBlock(width, self.bn_momentum, self.norm)(x, train)
        return nn.Conv(self.num_classes, (1, 1))(x)
