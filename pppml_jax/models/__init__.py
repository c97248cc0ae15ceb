"""Flax models: ordinary ``nn.Module`` classes; the federation never needs to change a model.

Defaults are the paper's networks (docs/method.md 2); smaller members of each family are made
with ``functools.partial``, e.g. :data:`UNet2DTiny` for quick runs and tests.
"""

import functools

from pppml_jax.models.densenet3d import DenseNet3D
from pppml_jax.models.lenet import ACTIVATIONS, LeNet
from pppml_jax.models.small_cnn import SmallCNN
from pppml_jax.models.unet import UNet2D

UNet2DTiny = functools.partial(UNet2D, levels=3, features=8)
"""A 3-level, 8-feature U-Net (121k parameters with 3 input channels) for quick runs and tests."""

DenseNet3DTiny = functools.partial(
    DenseNet3D, growth_rate=8, block_config=(1, 2, 2), init_features=8, head_hidden=8
)
"""A narrow three-block DenseNet3D for quick runs and tests."""

__all__ = [
    "ACTIVATIONS",
    "DenseNet3D",
    "DenseNet3DTiny",
    "LeNet",
    "SmallCNN",
    "UNet2D",
    "UNet2DTiny",
]
