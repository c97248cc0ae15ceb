"""CT volumes to 2D model inputs: slices along X, Y or Z with square pixels and 3 channels.

A volume in RAS+ order (:mod:`pppml_jax.data.nifti`) is viewed along ``axis`` in the usual
radiological orientation:

- ``"z"`` (axial): rows anterior to posterior, columns patient right to left;
- ``"y"`` (coronal): rows superior to inferior, columns patient right to left;
- ``"x"`` (sagittal): rows superior to inferior, columns anterior to posterior.

Each slice plane is resampled to square pixels of ``max(physical extent) / size`` mm (so the
anatomy keeps its aspect ratio whatever the voxel spacing), centred and padded with air to
``size x size``. The input of slice ``i`` stacks slices ``i - 1, i, i + 1`` as channels
(clamped at the ends), windowed as ``(HU + 600) / 1600``; the mask is the centre slice's.
"""

from __future__ import annotations

import numpy as np

from pppml_jax.data._ops import resize, window_hu

AXES = ("x", "y", "z")
AIR_HU = -1000.0


def to_view(volume: np.ndarray, spacing: tuple[float, float, float], axis: str):
    """``volume: [X, Y, Z]`` (RAS+) to ``[n, rows, cols]`` for ``axis``, with (row, col) spacing."""
    if axis not in AXES:
        raise ValueError(f"axis={axis!r} is not one of {AXES}")
    sx, sy, sz = spacing
    if axis == "z":
        view = np.transpose(volume[::-1, ::-1, :], (2, 1, 0))  # [Z, Y desc, X desc]
        return view, (sy, sx)
    if axis == "y":
        view = np.transpose(volume[::-1, :, ::-1], (1, 2, 0))  # [Y, Z desc, X desc]
        return view, (sz, sx)
    view = np.transpose(volume[:, ::-1, ::-1], (0, 2, 1))  # [X, Z desc, Y desc]
    return view, (sz, sy)


def _neighbours(index: np.ndarray, depth: int) -> np.ndarray:
    """``[n, 3]``: slice indices ``i - 1, i, i + 1`` of each ``i`` in ``index``, clamped."""
    return np.clip(index[:, None] + np.array([-1, 0, 1])[None, :], 0, depth - 1)


def slice_stack(volume: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``[n, H, W, 3]``: slices ``i - 1, i, i + 1`` of ``volume: [D, H, W]`` (clamped at ends)."""
    return np.moveaxis(volume[_neighbours(index, volume.shape[0])], 1, -1)


def _square(view: np.ndarray, pixel: tuple[float, float], size: int, fill: float) -> np.ndarray:
    """Resamples ``view: [n, r, c]`` to square pixels and pads it to ``[n, size, size]``."""
    _, rows, cols = view.shape
    extent = max(rows * pixel[0], cols * pixel[1])
    new_rows = max(1, round(rows * pixel[0] / extent * size))
    new_cols = max(1, round(cols * pixel[1] / extent * size))
    scaled = resize(view.astype(np.float32), (new_rows, new_cols), axes=(1, 2))
    out = np.full((view.shape[0], size, size), fill, np.float32)
    top, left = (size - new_rows) // 2, (size - new_cols) // 2
    out[:, top : top + new_rows, left : left + new_cols] = scaled
    return out


def volume_to_slices(
    hu: np.ndarray,
    mask: np.ndarray | None,
    spacing: tuple[float, float, float],
    *,
    axis: str = "z",
    size: int = 128,
    stride: int = 1,
    lower_hu: float = -1024.0,
    upper_hu: float = 3071.0,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Cuts a CT volume into 3-channel 2D inputs (see the module docstring).

    Args:
      hu: ``[X, Y, Z]`` Hounsfield units in RAS+ order.
      mask: ``[X, Y, Z]`` lesion labels (non-zero is lesion) or ``None``.
      spacing: ``(sx, sy, sz)`` in millimetres.
      axis: ``"x"``, ``"y"`` or ``"z"``.
      size: output height and width in pixels.
      stride: keep every ``stride``-th slice.
      lower_hu, upper_hu: HU clip before windowing.

    Returns:
      ``(images [n, size, size, 3] float32, masks [n, size, size] uint8 or None,
      positions [n] int32)``, positions being slice indices along the viewing axis.
    """
    if size < 8:
        raise ValueError(f"size={size} must be >= 8 pixels")
    if stride < 1:
        raise ValueError(f"stride={stride} must be >= 1")
    view, pixel = to_view(hu, spacing, axis)
    positions = np.arange(0, view.shape[0], stride)
    neighbours = _neighbours(positions, view.shape[0])
    needed = np.unique(neighbours)
    squared = np.full((view.shape[0], size, size), AIR_HU, np.float32)
    squared[needed] = _square(view[needed], pixel, size, AIR_HU)
    windowed = window_hu(squared, lower=lower_hu, upper=upper_hu)
    images = np.moveaxis(windowed[neighbours], 1, -1)
    masks = None
    if mask is not None:
        mask_view, _ = to_view((mask != 0).astype(np.float32), spacing, axis)
        masks = (_square(mask_view[positions], pixel, size, 0.0) >= 0.5).astype(np.uint8)
    return images.astype(np.float32), masks, positions.astype(np.int32)
