"""The paper's RAD-ChestCT preprocessing: crop to the lungs, 70 central slices, 70 x 70 x 70.

Lungs are found without a model: air (< -400 HU) that is not connected to the image border
within its axial slice (outside air is filled from the four borders and grown into concave
pockets), keeping the slices whose lung area is at least ``min_area_fraction`` of the largest
one (this drops bowel gas and the trachea above the apices).
"""

from __future__ import annotations

import numpy as np

from pppml_jax.data._ops import block_mean, pad_depth, resize, window_hu


def _outside_air(air: np.ndarray, grow_steps: int) -> np.ndarray:
    """Air connected to the border of each slice of ``air: [S, H, W]`` (approximately)."""
    outside = np.zeros_like(air)
    for axis in (1, 2):
        forward = np.logical_and.accumulate(air, axis=axis)
        backward = np.flip(np.logical_and.accumulate(np.flip(air, axis=axis), axis=axis), axis=axis)
        outside |= forward | backward
    for _ in range(grow_steps):
        grown = outside.copy()
        grown[:, 1:, :] |= outside[:, :-1, :]
        grown[:, :-1, :] |= outside[:, 1:, :]
        grown[:, :, 1:] |= outside[:, :, :-1]
        grown[:, :, :-1] |= outside[:, :, 1:]
        grown &= air
        if np.array_equal(grown, outside):
            break
        outside = grown
    return outside


def lung_mask(hu: np.ndarray, *, air_hu: float = -400.0, grow_steps: int = 64) -> np.ndarray:
    """Approximate lung mask of ``hu: [S, H, W]`` (axial slices first), bool of the same shape."""
    air = hu < air_hu
    return air & ~_outside_air(air, grow_steps)


def lung_box(
    hu: np.ndarray, *, min_area_fraction: float = 0.1, max_side: int = 128
) -> tuple[slice, slice, slice]:
    """Bounding box ``(z, y, x)`` of the lungs in ``hu: [S, H, W]``; the whole volume if none.

    The mask is computed on a copy subsampled to at most ``max_side`` pixels per side.
    """
    step = max(1, int(np.ceil(max(hu.shape[1:]) / max_side)))
    small = hu[:, ::step, ::step]
    mask = lung_mask(small)
    area = mask.sum(axis=(1, 2))
    if area.max() == 0:
        return slice(0, hu.shape[0]), slice(0, hu.shape[1]), slice(0, hu.shape[2])
    keep = area >= min_area_fraction * area.max()
    zs = np.nonzero(keep)[0]
    plane = mask[keep].any(axis=0)
    ys, xs = np.nonzero(plane.any(axis=1))[0], np.nonzero(plane.any(axis=0))[0]
    return (
        slice(int(zs[0]), int(zs[-1]) + 1),
        slice(int(ys[0]) * step, min(hu.shape[1], (int(ys[-1]) + 1) * step)),
        slice(int(xs[0]) * step, min(hu.shape[2], (int(xs[-1]) + 1) * step)),
    )


def preprocess_volume(hu: np.ndarray, *, size: int = 70, crop: bool = True) -> np.ndarray:
    """Lung-cropped, ``size`` central slices, resized to ``[size, size, size]``, windowed.

    Args:
      hu: ``[S, H, W]`` Hounsfield units, axial slices first (RAD-ChestCT's layout).
      size: output side (the paper: 70).
      crop: crop to the lung bounding box first.

    Returns:
      ``[size, size, size]`` float32, ``(HU + 600) / 1600``. When the box has fewer than
      ``size`` slices they are interpolated up to ``size``.
    """
    if hu.ndim != 3:
        raise ValueError(f"expected a volume [S, H, W], got shape {hu.shape}")
    if crop:
        hu = hu[lung_box(hu)]
    if hu.shape[0] > size:
        start = (hu.shape[0] - size) // 2
        hu = hu[start : start + size]
    out = resize(hu.astype(np.float32), (size, size, size), axes=(0, 1, 2))
    return window_hu(out, lower=-1000.0, upper=1000.0)


def simulate_slice_thickness(volume: np.ndarray, thickness: int) -> np.ndarray:
    """The paper's simulation: average blocks of ``thickness`` slices, zero-pad back (centred).

    Args:
      volume: ``[D, ...]`` (e.g. ``[70, 70, 70, 1]``).
      thickness: slices per block (1 leaves the volume unchanged).

    Returns:
      array of the same shape: ``ceil(D / thickness)`` averaged slices in the middle, zeros
      around them.
    """
    if thickness < 1:
        raise ValueError(f"thickness={thickness} must be >= 1")
    if thickness == 1:
        return volume
    return pad_depth(block_mean(volume, thickness, axis=0).astype(volume.dtype), volume.shape[0])
