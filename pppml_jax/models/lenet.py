"""LeNet: the small sigmoid CNN of the DLG / iDLG gradient-inversion reference setting."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": nn.sigmoid,
    "tanh": jnp.tanh,
    "softplus": nn.softplus,
    "gelu": nn.gelu,
    "relu": nn.relu,
}
"""Activations by name. All but ``"relu"`` are smooth (twice differentiable everywhere)."""


def resolve_activation(activation: str | Callable[[jax.Array], jax.Array]):
    """Returns the activation function for a name in :data:`ACTIVATIONS` or a callable.

    Raises:
      ValueError: ``activation`` is a string that is not a key of :data:`ACTIVATIONS`.
    """
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation={activation!r} is unknown; use one of {sorted(ACTIVATIONS)} or pass a "
            "callable"
        )
    return ACTIVATIONS[activation]


def _symmetric_uniform(limit: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -limit, limit)

    return init


class LeNet(nn.Module):
    """Three 5x5 convolutions (strides 2, 2, 1; 12 channels each) and one dense layer.

    The network of the DLG and iDLG papers (Zhu et al. 2019; Zhao, Mopuri, Bilen 2020): on a
    ``32x32`` input the feature map is ``8x8x12`` (768 values) before the classifier. With the
    default sigmoid activation the network is smooth, so second derivatives (the gradient of a
    gradient-matching loss with respect to the input or the parameters) exist everywhere.
    Convolutions pad 2 pixels on each side as the reference code does.

    Attributes:
      num_classes: number of output logits.
      features: channels of each convolution.
      strides: stride of each convolution (same length as ``features``).
      activation: a name in :data:`ACTIVATIONS` or a callable; use a smooth one (not
        ``"relu"``) for gradient-inversion attacks.
      init_range: every weight and bias is drawn from ``U(-init_range, init_range)``, as in the
        DLG / iDLG reference code (0.5); ``None`` uses Flax's defaults (LeCun normal, zero bias).

    Input ``x``: ``[B, H, W, C]`` float32 (reference: ``[1, 32, 32, 1]`` or ``[1, 32, 32, 3]``).
    Output: ``[B, num_classes]`` logits.

    Example::

        model = LeNet(num_classes=2)
        params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))["params"]
        logits = model.apply({"params": params}, x)
    """

    num_classes: int = 2
    features: Sequence[int] = (12, 12, 12)
    strides: Sequence[int] = (2, 2, 1)
    activation: str | Callable[[jax.Array], jax.Array] = "sigmoid"
    init_range: float | None = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or normalisation
        if x.ndim != 4:
            raise ValueError(f"LeNet expects x of shape [B, H, W, C], got shape {x.shape}")
        if len(self.features) != len(self.strides):
            raise ValueError(
                f"features={tuple(self.features)} and strides={tuple(self.strides)} must have "
                "the same length"
            )
        act = resolve_activation(self.activation)
        inits = {}
        if self.init_range is not None:
            init = _symmetric_uniform(float(self.init_range))
            inits = {"kernel_init": init, "bias_init": init}
        for width, stride in zip(self.features, self.strides, strict=True):
            x = nn.Conv(width, (5, 5), strides=(stride, stride), padding=((2, 2), (2, 2)), **inits)(
                x
            )
            x = act(x)
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes, **inits)(x)
