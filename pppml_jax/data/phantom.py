"""A deterministic chest-CT phantom in Hounsfield units with infection lesions and their mask.

Anatomy (thin axial slices, anterior at the top of each slice, the patient's right on the
left): body outline with subcutaneous fat, two lungs whose cross-section grows towards the
base, heart, descending aorta, spine, ribs, trachea and main bronchi (air lumen with a wall),
and pulmonary vessels (tubes running mostly cranio-caudally, thicker near the hilum).
Infection lesions are irregular blobs inside the lungs, either ground-glass opacities
(-700 to -450 HU) or consolidations (-150 to +20 HU), with a soft edge and texture; the lesion
mask is where a lesion covers at least half of a voxel of lung. Lesions are added until the
infection-to-lung volume ratio reaches a drawn target; the patient label is
``infection_ratio > 0.1`` as in the paper.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pppml_jax.data._ops import smooth_noise

INFECTION_THRESHOLD = 0.1
"""A patient is positive when infected lung volume / lung volume exceeds this (the paper's)."""

AIR_HU, LUNG_HU, FAT_HU, TISSUE_HU, BLOOD_HU = -1000.0, -860.0, -100.0, 40.0, 45.0
BONE_HU, CORTEX_HU = 350.0, 900.0


@dataclasses.dataclass(frozen=True)
class Phantom:
    """One synthetic patient on thin slices.

    Attributes:
      hu: ``[D, S, S]`` float32 Hounsfield units.
      lesion: ``[D, S, S]`` bool infection mask.
      lung: ``[D, S, S]`` bool lung mask.
      infection_ratio: lesion voxels / lung voxels.
      spacing_mm: ``(z, y, x)`` voxel spacing in millimetres.
    """

    hu: np.ndarray
    lesion: np.ndarray
    lung: np.ndarray
    infection_ratio: float
    spacing_mm: tuple[float, float, float]

    @property
    def label(self) -> int:
        """1 when ``infection_ratio > INFECTION_THRESHOLD``, else 0."""
        return int(self.infection_ratio > INFECTION_THRESHOLD)


def _splat_disks(
    coverage: np.ndarray,
    z: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
    radius: np.ndarray,
) -> None:
    """Max-accumulates anti-aliased disks (pixel units) into ``coverage[z, y, x]`` in place."""
    if len(z) == 0:
        return
    size_y, size_x = coverage.shape[1:]
    half = int(np.ceil(radius.max() + 1.5))
    offsets = np.arange(-half, half + 1)
    oy, ox = np.meshgrid(offsets, offsets, indexing="ij")
    py = np.rint(cy)[:, None] + oy.ravel()[None, :]
    px = np.rint(cx)[:, None] + ox.ravel()[None, :]
    dist = np.sqrt((py - cy[:, None]) ** 2 + (px - cx[:, None]) ** 2)
    value = np.clip(radius[:, None] + 0.5 - dist, 0.0, 1.0)
    inside = (py >= 0) & (py < size_y) & (px >= 0) & (px < size_x) & (value > 0)
    zz = np.broadcast_to(z[:, None], py.shape)
    np.maximum.at(
        coverage,
        (zz[inside], py[inside].astype(np.int64), px[inside].astype(np.int64)),
        value[inside].astype(coverage.dtype),
    )


def _to_pixel(coordinate: np.ndarray | float, size: int) -> np.ndarray:
    """Normalised coordinate in [-1, 1] to a (fractional) pixel index in [-0.5, size - 0.5]."""
    return (np.asarray(coordinate, dtype=np.float64) + 1.0) * size / 2.0 - 0.5


def _blend(hu: np.ndarray, coverage: np.ndarray, value: float | np.ndarray) -> np.ndarray:
    return hu + coverage * (value - hu)


def chest_phantom(
    rng: np.random.Generator,
    *,
    size: int = 64,
    depth: int = 48,
    slice_mm: float = 1.25,
    fov_mm: float = 360.0,
    target_ratio: float = 0.0,
    max_lesions: int = 14,
) -> Phantom:
    """Draws one synthetic chest CT.

    Args:
      rng: the patient's random generator (everything is drawn from it).
      size: in-plane pixels (field of view ``fov_mm``).
      depth: number of thin slices, ``slice_mm`` apart; they span a slab of the lower chest.
      slice_mm: thin-slice spacing in millimetres.
      fov_mm: in-plane field of view in millimetres.
      target_ratio: infection-to-lung ratio to reach (0 for a healthy patient).
      max_lesions: upper bound on the number of lesions.

    Returns:
      a :class:`Phantom`.
    """
    if size < 16 or depth < 3:
        raise ValueError(f"size={size} must be >= 16 and depth={depth} >= 3")
    px_mm = fov_mm / size
    coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0  # normalised [-1, 1]
    v = coords[None, :, None]  # rows: anterior (-1) to posterior (+1)
    u = coords[None, None, :]  # columns: patient right (-1) to left (+1)
    zn = (np.arange(depth) + 0.5) / depth
    zc = zn[:, None, None]
    shape = (depth, size, size)

    # Body with subcutaneous fat.
    body_a, body_b = rng.uniform(0.80, 0.92), rng.uniform(0.56, 0.68)
    body_r = (u / body_a) ** 2 + ((v - 0.02) / body_b) ** 2
    body = np.broadcast_to(body_r <= 1.0, shape)
    muscle = np.broadcast_to(body_r <= rng.uniform(0.78, 0.88), shape)
    texture = smooth_noise(rng, shape, cells=(depth // 6 + 2, size // 6, size // 6))
    hu = np.where(body, FAT_HU, AIR_HU) + np.where(muscle, TISSUE_HU - FAT_HU, 0.0)
    hu = hu + np.where(body, 12.0 * texture, 0.0)

    # Lungs: two ellipses that widen towards the base, minus the heart.
    growth = np.clip(0.62 + 0.5 * zc, 0.0, 1.0)
    lung_cx = rng.uniform(0.4, 0.44)
    lung_a, lung_b = rng.uniform(0.27, 0.31), rng.uniform(0.42, 0.5)
    lung_cy = rng.uniform(-0.02, 0.05)
    lung = np.zeros(shape, bool)
    lung_r = np.full(shape, np.inf, np.float32)
    for side in (-1.0, 1.0):
        r = ((u - side * lung_cx) / (lung_a * growth)) ** 2 + (
            (v - lung_cy) / (lung_b * growth)
        ) ** 2
        lung |= r <= 1.0
        lung_r = np.minimum(lung_r, r.astype(np.float32))
    heart_r = rng.uniform(0.17, 0.22) * np.clip((zc - 0.1) / 0.6, 0.0, 1.0)
    heart = (u - 0.12) ** 2 + (v + 0.12) ** 2 <= heart_r**2
    lung &= ~heart & (body_r <= 0.7)  # inside the rib cage
    hu = np.where(heart, BLOOD_HU + 10.0 * texture, hu)
    parenchyma = LUNG_HU + 25.0 * smooth_noise(
        rng, shape, cells=(depth // 3 + 2, size // 3, size // 3)
    )
    hu = np.where(lung, parenchyma, hu)

    # Spine, aorta and ribs.
    spine_cy = rng.uniform(0.44, 0.52)
    spine = u**2 + (v - spine_cy) ** 2
    spine_r = 0.09
    hu = np.where(np.broadcast_to(spine <= spine_r**2, shape), CORTEX_HU, hu)
    hu = np.where(np.broadcast_to(spine <= (0.7 * spine_r) ** 2, shape), BONE_HU, hu)
    aorta = (u - 0.13) ** 2 + (v - (spine_cy - 0.14)) ** 2 <= 0.055**2
    hu = np.where(np.broadcast_to(aorta, shape), BLOOD_HU, hu)
    rib_cov = np.zeros(shape, np.float32)
    zs, ys, xs, rs = [], [], [], []
    for side in (-1.0, 1.0):
        for angle in np.linspace(0.12 * np.pi, 0.88 * np.pi, 6):
            phase = angle + 0.35 * zn  # ribs slope downwards along the slab
            ys.append(_to_pixel(0.02 - 0.9 * body_b * np.cos(phase), size))
            xs.append(_to_pixel(side * 0.9 * body_a * np.sin(phase), size))
            zs.append(np.arange(depth))
            rs.append(np.full(depth, 0.018 * size))
    _splat_disks(
        rib_cov, np.concatenate(zs), np.concatenate(ys), np.concatenate(xs), np.concatenate(rs)
    )
    hu = _blend(hu, rib_cov * (~lung), CORTEX_HU - 200.0)

    # Pulmonary vessels: tubes drifting laterally as they run through the slab.
    n_vessels = int(rng.integers(18, 28))
    zs, ys, xs, rs = [], [], [], []
    lung_idx = np.argwhere(lung)
    for _ in range(n_vessels):
        if len(lung_idx) == 0:
            break
        z0, y0, x0 = lung_idx[rng.integers(len(lung_idx))]
        length = int(rng.integers(depth // 3, depth + 1))
        start = int(np.clip(z0 - rng.integers(0, length), 0, depth - 1))
        zz = np.arange(start, min(depth, start + length))
        hilum_x = size / 2.0 + (x0 - size / 2.0) * 0.3
        drift = (x0 - hilum_x) / depth * rng.uniform(0.2, 0.8)
        ys.append(y0 + rng.uniform(-0.15, 0.15) * (zz - z0))
        xs.append(x0 + drift * (zz - z0))
        periphery = min(1.0, abs(x0 - size / 2.0) / (size * 0.4))
        rs.append(np.full(len(zz), (2.2 - 1.6 * periphery) * size / 64.0 * rng.uniform(0.7, 1.1)))
        zs.append(zz)
    vessel_cov = np.zeros(shape, np.float32)
    if zs:
        _splat_disks(
            vessel_cov,
            np.concatenate(zs),
            np.concatenate(ys),
            np.concatenate(xs),
            np.concatenate(rs),
        )
    hu = _blend(hu, vessel_cov * lung, BLOOD_HU)

    # Trachea (upper slab) splitting into main bronchi that enter the lungs.
    wall_cov = np.zeros(shape, np.float32)
    lumen_cov = np.zeros(shape, np.float32)
    carina = int(depth * rng.uniform(0.25, 0.4))
    trachea_y = _to_pixel(lung_cy - 0.05, size)
    trachea_r = 0.05 * size / 2.0
    bronchus_r = 0.03 * size / 2.0
    zz = np.arange(0, carina)
    for cov, wall in ((wall_cov, 1.0), (lumen_cov, 0.0)):
        _splat_disks(
            cov,
            zz,
            np.full(len(zz), trachea_y),
            np.full(len(zz), _to_pixel(0.0, size)),
            np.full(len(zz), trachea_r + wall),
        )
    zz = np.arange(carina, min(depth, carina + depth // 2))
    frac = (zz - carina) / max(1, depth // 2)
    for side in (-1.0, 1.0):
        bx = _to_pixel(side * frac * lung_cx, size)
        by = trachea_y + frac * 0.05 * size
        for cov, wall in ((wall_cov, 0.8), (lumen_cov, 0.0)):
            _splat_disks(cov, zz, by, bx, np.full(len(zz), bronchus_r + wall))
    hu = _blend(hu, wall_cov, TISSUE_HU)
    hu = _blend(hu, lumen_cov, AIR_HU)

    # Infection lesions, added until the infection-to-lung ratio reaches the target.
    lesion = np.zeros(shape, bool)
    lung_voxels = max(1, int(lung.sum()))
    weights = np.clip(lung_r[lung], 0.0, 1.0) ** 2 + 0.05  # favour the periphery
    weights = weights / weights.sum()
    lung_points = np.argwhere(lung)
    n_lesions = 0
    while (
        target_ratio > 0
        and lesion.sum() / lung_voxels < target_ratio
        and n_lesions < max_lesions
        and len(lung_points)
    ):
        n_lesions += 1
        cz, cy, cx = lung_points[rng.choice(len(lung_points), p=weights)]
        big = target_ratio > INFECTION_THRESHOLD
        radii_mm = rng.uniform(14.0, 34.0, 3) if big else rng.uniform(10.0, 18.0, 3)
        rz = max(1.0, radii_mm[0] / slice_mm)
        ry, rx = radii_mm[1] / px_mm, radii_mm[2] / px_mm
        z0, z1 = int(max(0, cz - rz - 1)), int(min(depth, cz + rz + 2))
        y0, y1 = int(max(0, cy - ry - 1)), int(min(size, cy + ry + 2))
        x0, x1 = int(max(0, cx - rx - 1)), int(min(size, cx + rx + 2))
        gz = (np.arange(z0, z1)[:, None, None] - cz) / rz
        gy = (np.arange(y0, y1)[None, :, None] - cy) / ry
        gx = (np.arange(x0, x1)[None, None, :] - cx) / rx
        box = (z1 - z0, y1 - y0, x1 - x0)
        bumps = smooth_noise(rng, box, cells=(4, 4, 4))
        field = gz**2 + gy**2 + gx**2 + 0.35 * bumps
        opacity = np.clip((1.0 - field) / 0.3 + 0.5, 0.0, 1.0) * lung[z0:z1, y0:y1, x0:x1]
        ground_glass = rng.uniform() < 0.6  # else consolidation
        value = rng.uniform(-700.0, -450.0) if ground_glass else rng.uniform(-150.0, 20.0)
        value = value + 40.0 * smooth_noise(rng, box, cells=(3, 5, 5))
        region = hu[z0:z1, y0:y1, x0:x1]
        hu[z0:z1, y0:y1, x0:x1] = region + opacity * (value - region)
        lesion[z0:z1, y0:y1, x0:x1] |= opacity >= 0.5
    lesion &= lung
    ratio = float(lesion.sum() / lung_voxels)
    return Phantom(
        hu=hu.astype(np.float32),
        lesion=lesion,
        lung=lung,
        infection_ratio=ratio,
        spacing_mm=(float(slice_mm), float(px_mm), float(px_mm)),
    )


def draw_target_ratio(
    rng: np.random.Generator, *, prevalence: float, infected_only: bool = False
) -> float:
    """Draws an infection-to-lung target ratio for one patient.

    With ``infected_only`` (the segmentation cohort: every patient has COVID-19 lesions, as in
    the paper's data) the target is uniform in [0.03, 0.35], mild to severe. Otherwise infected
    patients (probability ``prevalence``) get a target in [0.13, 0.35] and the others are healthy
    (target 0) or have a few small lesions (target in [0.02, 0.07]), half and half.
    """
    if infected_only:
        return float(rng.uniform(0.03, 0.35))
    if rng.uniform() < prevalence:
        return float(rng.uniform(0.13, 0.35))
    return 0.0 if rng.uniform() < 0.5 else float(rng.uniform(0.02, 0.07))
