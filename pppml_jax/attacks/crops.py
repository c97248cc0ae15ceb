"""32x32 single-channel crops of chest CT slices for the attacks (pure numpy, no data set).

A crop's pixel values are Hounsfield units mapped linearly from a window ``[low, high]`` (a
lung window by default) to ``[0, 1]`` and clipped, so ``data_range=1.0`` for PSNR and SSIM. Its
label is 1 when it holds at least ``min_lesion_pixels`` lesion pixels (infection for the
phantoms, tumour for the real scans), else 0. Crops lie inside the body (no air outside the
patient) and are drawn half with and half without a lesion where possible, deterministically
from a seed. Crops of the project's data sets are drawn by
:mod:`pppml_jax.experiments.privacy_data`, which reads the slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LUNG_WINDOW_HU = (-1000.0, 400.0)
"""Default window ``(low, high)`` in HU: lung parenchyma to soft tissue and vessels."""

_BODY_HU = -950.0  # above this a pixel is inside the patient (lung parenchyma is about -850)


@dataclass(frozen=True)
class Crops:
    """Crops and where they come from.

    Attributes:
      images: ``[N, size, size, 1]`` float32 in ``[0, 1]``.
      labels: ``[N]`` int32, 1 when the crop holds a lesion.
      sources: ``N`` strings naming slice and offset (e.g. ``"hospital_A s12 y16 x8"``).
    """

    images: np.ndarray
    labels: np.ndarray
    sources: tuple[str, ...]


def hu_to_unit(hu: np.ndarray, *, window: tuple[float, float] = LUNG_WINDOW_HU) -> np.ndarray:
    """Maps HU linearly from ``window = (low, high)`` to ``[0, 1]`` and clips (float32)."""
    low, high = float(window[0]), float(window[1])
    if not high > low:
        raise ValueError(f"window={window!r}: needs low < high (HU)")
    return np.clip((np.asarray(hu, np.float32) - low) / (high - low), 0.0, 1.0).astype(np.float32)


def select_crops(
    hu_slices: np.ndarray,
    masks: np.ndarray,
    num: int,
    *,
    names: list[str] | None = None,
    groups: list[str] | None = None,
    size: int = 32,
    stride: int = 4,
    window: tuple[float, float] = LUNG_WINDOW_HU,
    min_lesion_pixels: int = 8,
    min_body_fraction: float = 0.95,
    seed: int = 0,
) -> Crops:
    """Draws ``num`` crops from slices: half with a lesion, half without (where possible).

    Candidates are the ``size x size`` windows on a ``stride`` grid whose pixels are at least
    ``min_body_fraction`` inside the body (HU above -950); at most one crop per group (e.g.
    per patient, so that no two crops show neighbouring slices) is taken while enough groups
    remain.

    Args:
      hu_slices: ``[S, H, W]`` slices in HU.
      masks: ``[S, H, W]`` lesion masks (non-zero is lesion).
      num: number of crops (>= 1).
      names: a name per slice for ``Crops.sources`` (default ``"s<index>"``).
      groups: a group per slice (default: every slice its own group).
      size: crop height and width in pixels.
      stride: grid step of candidate corners, pixels.
      window: HU window mapped to ``[0, 1]``.
      min_lesion_pixels: lesion pixels that make a crop's label 1.
      min_body_fraction: share of pixels that must be inside the body.
      seed: seed of the draw.

    Returns:
      :class:`Crops` with ``num`` crops.

    Raises:
      ValueError: bad shapes or options, or fewer than ``num`` candidate windows.
    """
    hu_slices, masks = np.asarray(hu_slices, np.float32), np.asarray(masks)
    if hu_slices.ndim != 3 or masks.shape != hu_slices.shape:
        raise ValueError(
            f"hu_slices {hu_slices.shape} and masks {masks.shape} must both be [S, H, W]"
        )
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"num={num!r} must be a positive int")
    n_slices, height, width = hu_slices.shape
    if size > min(height, width):
        raise ValueError(f"size={size} exceeds the slices' {height}x{width} pixels")
    names = names if names is not None else [f"s{i}" for i in range(n_slices)]
    groups = groups if groups is not None else [str(i) for i in range(n_slices)]
    if len(names) != n_slices or len(groups) != n_slices:
        raise ValueError(
            f"names ({len(names)}) and groups ({len(groups)}) need one entry per slice ({n_slices})"
        )
    body = hu_slices > _BODY_HU
    lesion = masks != 0
    candidates: dict[int, list[tuple[int, int, int, int]]] = {0: [], 1: []}
    for s in range(n_slices):
        for y in range(0, height - size + 1, stride):
            for x in range(0, width - size + 1, stride):
                if body[s, y : y + size, x : x + size].mean() < min_body_fraction:
                    continue
                label = int(lesion[s, y : y + size, x : x + size].sum() >= min_lesion_pixels)
                candidates[label].append((s, y, x, label))
    if len(candidates[0]) + len(candidates[1]) < num:
        raise ValueError(
            f"only {len(candidates[0]) + len(candidates[1])} candidate crops for num={num}; "
            "lower min_body_fraction or stride, or pass more slices"
        )
    rng = np.random.default_rng(seed)
    want = {1: min(num // 2, len(candidates[1]))}
    want[0] = min(num - want[1], len(candidates[0]))
    want[1] = num - want[0]
    chosen: list[tuple[int, int, int, int]] = []
    for label in (0, 1):
        pool = [candidates[label][i] for i in rng.permutation(len(candidates[label]))]
        used: set[str] = set()
        picked = []
        for c in pool:  # one crop per group first, then the rest
            if len(picked) == want[label]:
                break
            if groups[c[0]] not in used:
                picked.append(c)
                used.add(groups[c[0]])
        rest = [c for c in pool if c not in picked]
        picked += rest[: want[label] - len(picked)]
        chosen += picked
    chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    images = np.stack(
        [
            hu_to_unit(hu_slices[s, y : y + size, x : x + size], window=window)
            for s, y, x, _ in chosen
        ]
    )[..., None]
    labels = np.array([c[3] for c in chosen], np.int32)
    sources = tuple(f"{names[s]} y{y} x{x}" for s, y, x, _ in chosen)
    return Crops(images.astype(np.float32), labels, sources)
