"""Host-side numpy array operations for data preparation: resizing, blurring, block means."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=256)
def _resize_matrix(in_size: int, out_size: int, antialias: bool) -> np.ndarray:
    """``[out_size, in_size]`` weights of linear (triangle-kernel) resampling, rows sum to 1.

    Sample centres are aligned as pixel centres (``c = (j + 0.5) * in / out - 0.5``); when
    shrinking with ``antialias`` the triangle is widened by ``in / out`` so that every input
    pixel contributes (area-like averaging). Weights falling outside the input are dropped and
    the rest renormalised (edge clamping).
    """
    scale = in_size / out_size
    radius = max(scale, 1.0) if antialias else 1.0
    centres = (np.arange(out_size) + 0.5) * scale - 0.5
    taps = np.arange(in_size)
    weights = np.maximum(0.0, 1.0 - np.abs(taps[None, :] - centres[:, None]) / radius)
    sums = weights.sum(axis=1, keepdims=True)
    nearest = np.clip(np.rint(centres).astype(int), 0, in_size - 1)
    empty = sums[:, 0] == 0
    weights[empty, nearest[empty]] = 1.0
    sums[empty] = 1.0
    matrix = weights / sums
    matrix.setflags(write=False)
    return matrix


def apply_along_axis(x: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    """Multiplies ``matrix: [m, n]`` into axis ``axis`` (length ``n``) of ``x``, giving length m."""
    moved = np.moveaxis(x, axis, -1)
    out = moved @ matrix.T.astype(moved.dtype, copy=False)
    return np.moveaxis(out, -1, axis)


def resize(
    x: np.ndarray, shape: Sequence[int], *, axes: Sequence[int], antialias: bool = True
) -> np.ndarray:
    """Linear resize of the given axes of ``x`` to ``shape`` (separable, float).

    Args:
      x: float array.
      shape: new lengths, one per entry of ``axes``.
      axes: the axes to resize.
      antialias: widen the kernel when shrinking (see :func:`_resize_matrix`).

    Returns:
      float array (dtype of ``x`` if floating, else float32) with the resized axes.
    """
    if len(shape) != len(axes):
        raise ValueError(f"shape={tuple(shape)} and axes={tuple(axes)} differ in length")
    out = x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)
    for size, axis in zip(shape, axes, strict=True):
        if size < 1:
            raise ValueError(f"resize target {tuple(shape)} must be positive")
        if out.shape[axis] != size:
            out = apply_along_axis(out, _resize_matrix(out.shape[axis], int(size), antialias), axis)
    return out


@lru_cache(maxsize=128)
def _gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """``[size, size]`` Gaussian smoothing with mirror ("reflect") boundary handling."""
    radius = max(1, int(4.0 * sigma + 0.5))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets**2) / (2.0 * sigma**2))
    kernel /= kernel.sum()
    matrix = np.zeros((size, size))
    rows = np.arange(size)
    for offset, weight in zip(offsets, kernel, strict=True):
        cols = rows + offset
        period = 2 * size
        cols = np.mod(cols, period)
        cols = np.where(cols >= size, period - 1 - cols, cols)
        np.add.at(matrix, (rows, cols), weight)
    matrix.setflags(write=False)
    return matrix


def gaussian_blur(x: np.ndarray, sigma: float, *, axes: Sequence[int]) -> np.ndarray:
    """Separable Gaussian blur (standard deviation ``sigma`` pixels) over ``axes``."""
    if sigma <= 0:
        return x
    out = x
    for axis in axes:
        out = apply_along_axis(out, _gaussian_matrix(out.shape[axis], float(sigma)), axis)
    return out


def block_mean(x: np.ndarray, block: int, *, axis: int) -> np.ndarray:
    """Means of consecutive blocks of ``block`` entries along ``axis``.

    The output has ``ceil(n / block)`` entries; a last, partial block is averaged over the
    entries it has.
    """
    if block < 1:
        raise ValueError(f"block={block} must be >= 1")
    if block == 1:
        return x.astype(np.float32) if not np.issubdtype(x.dtype, np.floating) else x
    n = x.shape[axis]
    starts = np.arange(0, n, block)
    sums = np.add.reduceat(x.astype(np.float64), starts, axis=axis)
    counts = np.minimum(starts + block, n) - starts
    shape = [1] * x.ndim
    shape[axis] = len(starts)
    return (sums / counts.reshape(shape)).astype(np.float32)


def smooth_noise(
    rng: np.random.Generator, shape: Sequence[int], *, cells: Sequence[int]
) -> np.ndarray:
    """A smooth random field of roughly unit standard deviation.

    White Gaussian noise on a coarse grid of ``cells`` points per axis, linearly interpolated to
    ``shape``.
    """
    coarse = rng.standard_normal([max(2, int(c)) for c in cells]).astype(np.float32)
    field = resize(coarse, shape, axes=tuple(range(len(shape))), antialias=False)
    return field.astype(np.float32)


def window_hu(hu: np.ndarray, *, lower: float = -1024.0, upper: float = 3071.0) -> np.ndarray:
    """The paper's CT normalisation ``(HU + 600) / 1600`` after clipping HU to [lower, upper].

    Lung parenchyma (about -850 HU) maps to about -0.16, water to 0.375, dense bone (1000 HU)
    to 1.0. The clip removes values outside the scanner's 12-bit range.
    """
    return ((np.clip(hu, lower, upper) + 600.0) / 1600.0).astype(np.float32)


def unwindow_hu(images: np.ndarray) -> np.ndarray:
    """HU from :func:`window_hu`'s normalised values: ``x * 1600 - 600`` (float32; the clip
    is not undone)."""
    return np.asarray(images, np.float32) * 1600.0 - 600.0


def pad_depth(volume: np.ndarray, depth: int) -> np.ndarray:
    """Zero-pads (centred) or centre-crops axis 0 of ``volume`` to ``depth``."""
    current = volume.shape[0]
    if current >= depth:
        start = (current - depth) // 2
        return volume[start : start + depth]
    out = np.zeros((depth, *volume.shape[1:]), volume.dtype)
    start = (depth - current) // 2
    out[start : start + current] = volume
    return out
