"""Image-similarity metrics for reconstructions: MSE, PSNR and Gaussian-window SSIM."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check_pair(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"a has shape {a.shape} but b has shape {b.shape}; they must be equal")
    if a.ndim < 3:
        raise ValueError(
            f"images must be [..., H, W, C] (channels last), got shape {a.shape}; add a "
            "channel axis with x[..., None]"
        )
    dtype = jnp.promote_types(jnp.result_type(a, b), jnp.float32)
    return a.astype(dtype), b.astype(dtype)


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean squared error per image.

    Args:
      a, b: ``[..., H, W, C]`` images of equal shape.

    Returns:
      ``[...]`` mean of ``(a - b)**2`` over height, width and channels.
    """
    a, b = _check_pair(a, b)
    return jnp.mean((a - b) ** 2, axis=(-3, -2, -1))


def psnr(a: jax.Array, b: jax.Array, *, data_range: float = 1.0) -> jax.Array:
    """Peak signal-to-noise ratio ``10 log10(data_range**2 / MSE)`` in dB, per image.

    Args:
      a, b: ``[..., H, W, C]`` images of equal shape.
      data_range: the span of valid pixel values (1.0 for images in ``[0, 1]``).

    Returns:
      ``[...]`` PSNR in decibels; ``inf`` for identical images.
    """
    if data_range <= 0:
        raise ValueError(f"data_range={data_range} must be positive")
    return 10.0 * jnp.log10(data_range**2 / mse(a, b))


def gaussian_window(size: int, sigma: float) -> jax.Array:
    """``[size]`` normalised Gaussian weights centred on the middle sample."""
    offsets = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2.0
    weights = jnp.exp(-(offsets**2) / (2.0 * sigma**2))
    return weights / jnp.sum(weights)


def _filter_valid(x: jax.Array, window: jax.Array) -> jax.Array:
    """Separable 'valid' filtering of ``x: [N, H, W]`` with the 1D ``window`` along H then W."""
    size = window.shape[0]
    x = x[:, :, :, None]
    kernel_h = window.reshape(size, 1, 1, 1).astype(x.dtype)
    kernel_w = window.reshape(1, size, 1, 1).astype(x.dtype)
    dims = ("NHWC", "HWIO", "NHWC")
    x = jax.lax.conv_general_dilated(x, kernel_h, (1, 1), "VALID", dimension_numbers=dims)
    x = jax.lax.conv_general_dilated(x, kernel_w, (1, 1), "VALID", dimension_numbers=dims)
    return x[..., 0]


def ssim(
    a: jax.Array,
    b: jax.Array,
    *,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jax.Array:
    """Structural similarity (Wang et al. 2004) with a Gaussian window, per image.

    Local means, variances and covariance are Gaussian-weighted (``win_size`` x ``win_size``,
    standard deviation ``sigma``) over the positions where the window fits inside the image
    ("valid"), with population (not sample) statistics, as in the authors' reference code.
    The SSIM map ``(2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2))``
    with ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``, ``L = data_range`` is averaged over positions and
    channels.

    Args:
      a, b: ``[..., H, W, C]`` images of equal shape, with ``H, W >= win_size``.
      data_range: the span of valid pixel values ``L``.
      win_size: odd window size in pixels.
      sigma: standard deviation of the Gaussian window in pixels.
      k1, k2: the stabilising constants.

    Returns:
      ``[...]`` mean SSIM per image, in ``[-1, 1]`` (1 for identical images).

    References:
      Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from
      error visibility to structural similarity", IEEE TIP 13(4), 2004.
    """
    a, b = _check_pair(a, b)
    if data_range <= 0:
        raise ValueError(f"data_range={data_range} must be positive")
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size={win_size} must be a positive odd integer")
    height, width, channels = a.shape[-3:]
    if height < win_size or width < win_size:
        raise ValueError(
            f"images of {height}x{width} pixels are smaller than win_size={win_size}; pass a "
            "smaller odd win_size"
        )
    batch_shape = a.shape[:-3]
    # [..., H, W, C] -> [N * C, H, W]: every channel is filtered on its own.
    a2 = jnp.moveaxis(a.reshape((-1, height, width, channels)), -1, 1).reshape((-1, height, width))
    b2 = jnp.moveaxis(b.reshape((-1, height, width, channels)), -1, 1).reshape((-1, height, width))
    window = gaussian_window(win_size, sigma)
    mu_a = _filter_valid(a2, window)
    mu_b = _filter_valid(b2, window)
    # Second moments of images centred on their global means: the same (co)variances, with
    # less cancellation in E[x^2] - E[x]^2.
    a_c = a2 - jnp.mean(a2, axis=(-2, -1), keepdims=True)
    b_c = b2 - jnp.mean(b2, axis=(-2, -1), keepdims=True)
    mu_ac = _filter_valid(a_c, window)
    mu_bc = _filter_valid(b_c, window)
    var_a = _filter_valid(a_c * a_c, window) - mu_ac**2
    var_b = _filter_valid(b_c * b_c, window) - mu_bc**2
    cov = _filter_valid(a_c * b_c, window) - mu_ac * mu_bc
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    per_channel = jnp.mean(ssim_map, axis=(-2, -1)).reshape((-1, channels))
    return jnp.mean(per_channel, axis=-1).reshape(batch_shape)
