"""A 3-D convolution that XLA:CPU runs fast even with few input channels.

XLA:CPU has no fast kernel for 3-D convolutions with one or two input channels: the
DenseNet3D stem (``7x7x7``, one channel in, ``[8, 40, 32, 32, 1]``) takes about 300 ms
forward there, against 18 ms for the same arithmetic written as a 2-D convolution over
depth-unfolded channels (measured, jax 0.7.1, 2 cores; ``benchmarks/RESULTS.md``). The
unfolded form copies the input ``kernel_depth`` times, which is cheap on a CPU but costs
accelerator memory when many clients are vmapped, so it is the default on CPU only.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

Padding = Sequence[tuple[int, int]]


def conv3d(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Padding) -> jax.Array:
    """The plain 3-D convolution: ``x`` ``[B, D, H, W, C]``, ``kernel`` ``[kd, kh, kw, C, F]``."""
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        tuple(strides),
        [tuple(p) for p in padding],
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
    )


def unfolded_conv3d(
    x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Padding
) -> jax.Array:
    """The same convolution as :func:`conv3d`, as one 2-D convolution over unfolded depth.

    Every output depth position ``o`` gathers input depths ``o * sd + k - pad`` for the
    ``kd`` kernel taps ``k`` as channels (``[B * Do, H, W, kd * C]``), so the depth sum
    becomes part of the channel contraction of a 2-D convolution with the kernel reshaped
    to ``[kh, kw, kd * C, F]``. Output ``[B, Do, Ho, Wo, F]``, equal to :func:`conv3d` up
    to float summation order.
    """
    kd, kh, kw, cin, features = kernel.shape
    (pd_lo, pd_hi), pad_h, pad_w = (tuple(p) for p in padding)
    sd, sh, sw = strides
    batch, depth = x.shape[:2]
    padded = jnp.pad(x, ((0, 0), (pd_lo, pd_hi), (0, 0), (0, 0), (0, 0)))
    out_depth = (depth + pd_lo + pd_hi - kd) // sd + 1
    span = (out_depth - 1) * sd + 1
    taps = [padded[:, k : k + span : sd] for k in range(kd)]  # each [B, Do, H, W, C]
    cols = jnp.concatenate(taps, axis=-1).reshape(batch * out_depth, *x.shape[2:4], kd * cin)
    kernel_2d = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(kh, kw, kd * cin, features)
    y = jax.lax.conv_general_dilated(
        cols, kernel_2d, (sh, sw), [pad_h, pad_w], dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y.reshape(batch, out_depth, *y.shape[1:])


class Conv3D(nn.Module):
    """A bias-free 3-D convolution with explicit padding, parameter ``kernel`` as ``nn.Conv``.

    The parameter has ``nn.Conv``'s shape ``[kd, kh, kw, C, features]`` and initializer
    (LeCun normal), so checkpoints and name patterns such as ``params/Conv_0/kernel`` are
    the same as with ``nn.Conv(..., use_bias=False)``.

    Attributes:
      features: output channels F.
      kernel_size: ``(kd, kh, kw)``.
      strides: ``(sd, sh, sw)``.
      padding: ``((lo, hi),) * 3`` explicit zero padding per spatial axis.
      unfold: compute with :func:`unfolded_conv3d` (True), :func:`conv3d` (False), or by
        platform (None: unfolded on CPU, where it is about 16x faster for one input channel).

    Input ``[B, D, H, W, C]``; output ``[B, Do, Ho, Wo, F]``.
    """

    features: int
    kernel_size: tuple[int, int, int]
    strides: tuple[int, int, int] = (1, 1, 1)
    padding: tuple[tuple[int, int], ...] = ((0, 0), (0, 0), (0, 0))
    unfold: bool | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape, jnp.float32)
        unfold = jax.default_backend() == "cpu" if self.unfold is None else self.unfold
        fn = unfolded_conv3d if unfold else conv3d
        x, kernel = promote_dtype(x, kernel)
        return fn(x, kernel, self.strides, self.padding)
