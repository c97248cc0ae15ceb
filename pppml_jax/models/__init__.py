"""Flax models: ordinary ``nn.Module`` classes; the federation never needs to change a model."""

from pppml_jax.models.small_cnn import SmallCNN

__all__ = ["SmallCNN"]
