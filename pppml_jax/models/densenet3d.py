"""DenseNet3D: the paper's 3D DenseNet-BC for CT-volume classification."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pppml_jax.models._conv3d import Conv3D
from pppml_jax.models._norm import NORMS, normalization


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1x1 (``bn_size * growth_rate``) then BN-ReLU-conv3x3x3 (``growth_rate``).

    Returns the input with the ``growth_rate`` new channels concatenated.
    """

    growth_rate: int
    bn_size: int
    bn_momentum: float = 0.9
    norm: str = "batch"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        width = self.bn_size * self.growth_rate
        y = normalization(self.norm, train, self.bn_momentum, x.shape[-1])(x)
        y = nn.Conv(width, (1, 1, 1), use_bias=False)(nn.relu(y))
        y = normalization(self.norm, train, self.bn_momentum, width)(y)
        y = nn.Conv(self.growth_rate, (3, 3, 3), padding="SAME", use_bias=False)(nn.relu(y))
        return jnp.concatenate([x, y], axis=-1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1x1 to ``features`` channels, then 2x2x2 average pooling."""

    features: int
    bn_momentum: float = 0.9
    norm: str = "batch"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = normalization(self.norm, train, self.bn_momentum, x.shape[-1])(x)
        x = nn.Conv(self.features, (1, 1, 1), use_bias=False)(nn.relu(x))
        return nn.avg_pool(x, (2, 2, 2), strides=(2, 2, 2))


class DenseNet3D(nn.Module):
    """A 3D DenseNet-BC classifier.

    Stem: conv ``7x7x7`` with stride ``(1, 2, 2)`` (no bias, parameter ``Conv_0/kernel``), BN,
    ReLU, max pooling 3 / stride 2.
    Then dense blocks of :class:`DenseLayer` separated by :class:`Transition` layers that halve
    the channels, a final BN and ReLU, global average pooling, and the published head
    ``Dense(head_hidden) -> Dropout(head_dropout) -> Dense(num_classes)`` (no non-linearity
    between the two dense layers, as in the authors' code). With the defaults (growth 32, blocks
    (1, 3, 6, 4), bn_size 4, 32 initial features, one input channel) the features end at 256
    channels and the network has 1,845,470 parameters, the paper's "about 1.85M".

    Dropout is active only with ``train=True`` and then needs a ``"dropout"`` PRNG stream:
    ``model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": key})``;
    set ``head_dropout=0.0`` to train without one.

    Attributes:
      num_classes: number of output logits.
      growth_rate: channels added by each dense layer.
      block_config: number of dense layers in each block.
      bn_size: bottleneck width multiplier of the 1x1x1 convolutions.
      init_features: channels of the stem convolution.
      head_hidden: width of the first dense layer of the head (0 for a single dense layer).
      head_dropout: dropout rate between the two dense layers of the head.
      bn_momentum: BatchNorm running-average decay (0.9 equals PyTorch's momentum 0.1).
      norm: ``"batch"`` (default, the paper's), ``"group"`` (no running statistics) or
        ``"none"``.
      stem_unfold: how the stem convolution is computed (``models._conv3d.Conv3D``): None
        picks by platform (depth-unfolded on CPU, where XLA's 3-D convolution with one input
        channel is about 16x slower; plain on accelerators). Same parameters and results
        either way.

    Input ``x``: ``[B, D, H, W, C]`` float32 (the paper: ``[B, 70, 70, 70, 1]``).
    Output: ``[B, num_classes]`` logits.
    """

    num_classes: int = 2
    growth_rate: int = 32
    block_config: Sequence[int] = (1, 3, 6, 4)
    bn_size: int = 4
    init_features: int = 32
    head_hidden: int = 20
    head_dropout: float = 0.5
    bn_momentum: float = 0.9
    norm: str = "batch"
    stem_unfold: bool | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r} is not one of {NORMS}")
        if x.ndim != 5:
            raise ValueError(f"DenseNet3D expects x of shape [B, D, H, W, C], got shape {x.shape}")
        x = Conv3D(
            self.init_features,
            (7, 7, 7),
            strides=(1, 2, 2),
            padding=((3, 3), (3, 3), (3, 3)),
            unfold=self.stem_unfold,
            name="Conv_0",
        )(x)
        x = normalization(self.norm, train, self.bn_momentum, self.init_features)(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3, 3), strides=(2, 2, 2), padding=((1, 1), (1, 1), (1, 1)))
        channels = self.init_features
        for index, num_layers in enumerate(self.block_config):
            for _ in range(num_layers):
                x = DenseLayer(self.growth_rate, self.bn_size, self.bn_momentum, self.norm)(
                    x, train
                )
            channels += num_layers * self.growth_rate
            if index != len(self.block_config) - 1:
                channels //= 2
                x = Transition(channels, self.bn_momentum, self.norm)(x, train)
        x = normalization(self.norm, train, self.bn_momentum, channels)(x)
        x = jnp.mean(nn.relu(x), axis=(1, 2, 3))
        if self.head_hidden:
            x = nn.Dense(self.head_hidden)(x)
            x = nn.Dropout(self.head_dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
