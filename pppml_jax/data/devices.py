"""Simulated CT devices: slice thickness, resolution, noise, reconstruction kernel, calibration.

A :class:`DeviceProfile` turns an ideal thin-slice volume in Hounsfield units (HU) into what a
particular scanner and protocol would produce, in this order:

1. slice thickness: consecutive thin slices are averaged in blocks (partial-volume effect; the
   paper's 1 / 5 / 10 simulation); the lesion mask of a thick slice is the majority vote;
2. in-plane resolution: each slice is resampled to the acquisition ``matrix`` (area averaging);
3. quantum noise: white Gaussian noise of ``noise_hu / sqrt(slice_thickness)`` HU (thicker
   slices collect more photons);
4. reconstruction kernel: a soft kernel blurs (Gaussian, ``blur_sigma`` acquisition pixels), a
   sharp kernel enhances edges and noise (unsharp mask of amount ``sharpen``);
5. back to the output grid, then HU calibration ``HU' = hu_scale * HU + hu_offset``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from pppml_jax.data._ops import block_mean, gaussian_blur, resize, unwindow_hu


@dataclasses.dataclass(frozen=True)
class DeviceProfile:
    """One simulated scanner and protocol (a client of the synthetic federation).

    Attributes:
      name: client name; empty to derive ``"<label> (<kernel> kernel, <mm> mm)"``.
      label: short site label used in derived names, e.g. ``"hospital_A"``.
      num_patients: patients this site contributes (sites differ in size).
      slice_thickness: thin slices averaged into one output slice (>= 1).
      matrix: in-plane acquisition size in pixels; ``None`` means the output size.
      noise_hu: standard deviation of quantum noise for a single thin slice, HU.
      blur_sigma: soft-kernel Gaussian blur in acquisition pixels (0 for none).
      sharpen: sharp-kernel unsharp-mask amount (0 for none).
      hu_scale: calibration gain.
      hu_offset: calibration offset, HU.
      prevalence: classification only: probability that a patient of this site is drawn as
        infected (> 10% of lung volume); the label is computed from the actual lesion volume.
        (The segmentation cohort is all infected.)
    """

    name: str = ""
    label: str = "site"
    num_patients: int = 8
    slice_thickness: int = 1
    matrix: int | None = None
    noise_hu: float = 20.0
    blur_sigma: float = 0.0
    sharpen: float = 0.0
    hu_scale: float = 1.0
    hu_offset: float = 0.0
    prevalence: float = 0.5

    def __post_init__(self):
        if self.num_patients < 1:
            raise ValueError(f"num_patients={self.num_patients} must be >= 1")
        if self.slice_thickness < 1:
            raise ValueError(f"slice_thickness={self.slice_thickness} must be >= 1 thin slices")
        if self.matrix is not None and self.matrix < 4:
            raise ValueError(f"matrix={self.matrix} must be >= 4 pixels (or None)")
        for field in ("noise_hu", "blur_sigma", "sharpen"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field}={getattr(self, field)} must be >= 0")
        if self.hu_scale <= 0:
            raise ValueError(f"hu_scale={self.hu_scale} must be > 0")
        if not 0.0 <= self.prevalence <= 1.0:
            raise ValueError(f"prevalence={self.prevalence} must be in [0, 1]")

    @property
    def kernel(self) -> str:
        """``"soft"``, ``"sharp"`` or ``"standard"``."""
        if self.sharpen > 0:
            return "sharp"
        return "soft" if self.blur_sigma > 0 else "standard"

    def display_name(self, thin_mm: float | None) -> str:
        """``name``, or ``"<label> (<kernel> kernel, <thickness> mm)"`` (no mm for 2D images)."""
        if self.name:
            return self.name
        if thin_mm is None:
            return f"{self.label} ({self.kernel} kernel)"
        return f"{self.label} ({self.kernel} kernel, {self.slice_thickness * thin_mm:g} mm)"

    def to_dict(self, thin_mm: float | None, output_size: int) -> dict[str, Any]:
        """JSON-able description with the derived kernel name and physical thickness.

        ``thin_mm=None`` describes a 2D device (no slice thickness).
        """
        out = dataclasses.asdict(self)
        out["name"] = self.display_name(thin_mm)
        out["kernel"] = self.kernel
        out["matrix"] = self.matrix or output_size
        if thin_mm is None:
            del out["slice_thickness"]
        else:
            out["slice_thickness_mm"] = self.slice_thickness * thin_mm
        return out

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> DeviceProfile:
        """Builds a profile from a dict (e.g. a YAML entry); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"unknown device profile field(s) {unknown}; valid fields are {sorted(known)}"
            )
        return cls(**dict(options))


PRESETS: dict[str, tuple[DeviceProfile, ...]] = {
    "quickstart": (
        DeviceProfile(
            label="hospital_A", num_patients=10, slice_thickness=1, noise_hu=25.0, sharpen=1.2
        ),
        DeviceProfile(
            label="hospital_B",
            num_patients=8,
            slice_thickness=4,
            noise_hu=15.0,
            blur_sigma=1.0,
            hu_offset=60.0,
        ),
        DeviceProfile(
            name="hospital_C (low dose, 2.5 mm)",
            label="hospital_C",
            num_patients=12,
            slice_thickness=2,
            matrix=48,
            noise_hu=70.0,
            hu_scale=0.92,
            hu_offset=-40.0,
        ),
        DeviceProfile(
            name="hospital_D (low resolution, 5 mm)",
            label="hospital_D",
            num_patients=6,
            slice_thickness=4,
            matrix=32,
            noise_hu=10.0,
            hu_scale=1.08,
            prevalence=0.7,
        ),
    ),
    "paper_thickness": (
        DeviceProfile(label="client_0", num_patients=40, slice_thickness=1),
        DeviceProfile(label="client_1", num_patients=20, slice_thickness=5),
        DeviceProfile(label="client_2", num_patients=32, slice_thickness=10),
    ),
    "identical": tuple(DeviceProfile(label=f"site_{i}", num_patients=8) for i in range(4)),
}
"""Named sets of profiles. ``"quickstart"``: four hospitals that differ in every device
property. ``"paper_thickness"``: the paper's RAD-ChestCT simulation, three clients that differ
only in slice thickness (1 / 5 / 10 thin slices) and size. ``"identical"``: a control with four
equal devices."""


def resolve_profiles(profiles: str | Any) -> tuple[DeviceProfile, ...]:
    """A preset name, or a sequence of :class:`DeviceProfile` / dicts, as a tuple of profiles."""
    if isinstance(profiles, str):
        if profiles not in PRESETS:
            raise ValueError(f"profiles={profiles!r} is not a preset; use one of {sorted(PRESETS)}")
        return PRESETS[profiles]
    out = []
    for i, item in enumerate(profiles):
        if isinstance(item, DeviceProfile):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(DeviceProfile.from_dict(item))
        else:
            raise ValueError(f"profiles[{i}]={item!r} must be a DeviceProfile or a dict")
    if not out:
        raise ValueError("profiles is empty; give at least one device profile")
    return tuple(out)


def acquire(
    hu: np.ndarray,
    lesion: np.ndarray | None,
    profile: DeviceProfile,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Images a thin-slice phantom with a device (steps 1-5 of the module docstring).

    Args:
      hu: ``[D, S, S]`` float32, ideal HU on thin slices.
      lesion: ``[D, S, S]`` bool lesion mask, or ``None`` (no mask is made).
      profile: the device.
      rng: source of the device noise.

    Returns:
      ``(hu, mask)``: ``[ceil(D / k), S, S]`` float32 HU and uint8 mask (``None`` when
      ``lesion`` is), ``k`` the thickness.
    """
    size = hu.shape[-1]
    k = profile.slice_thickness
    thick = block_mean(hu.astype(np.float32), k, axis=0)
    mask = None
    if lesion is not None:
        mask = (block_mean(lesion.astype(np.float32), k, axis=0) >= 0.5).astype(np.uint8)
    matrix = profile.matrix or size
    if matrix != size:
        thick = resize(thick, (matrix, matrix), axes=(1, 2))
    if profile.noise_hu > 0:
        thick = thick + rng.normal(0.0, profile.noise_hu / np.sqrt(k), thick.shape).astype(
            np.float32
        )
    if profile.blur_sigma > 0:
        thick = gaussian_blur(thick, profile.blur_sigma, axes=(1, 2))
    if profile.sharpen > 0:
        thick = thick + profile.sharpen * (thick - gaussian_blur(thick, 1.0, axes=(1, 2)))
    if matrix != size:
        thick = resize(thick, (size, size), axes=(1, 2))
    thick = profile.hu_scale * thick + profile.hu_offset
    return thick.astype(np.float32), mask


def acquire_images(
    images: np.ndarray, profile: DeviceProfile, rng: np.random.Generator
) -> np.ndarray:
    """Applies a profile's in-plane effects (2-5) to 2D images in windowed units.

    Intensities are read as ``x = (HU + 600) / 1600`` (the paper's CT normalisation), so noise
    and offsets given in HU are divided by 1600. Slice thickness does not apply to 2D images.

    Args:
      images: ``[N, H, W, C]`` float32 with ``H == W``.
      profile: the device.
      rng: source of the noise.

    Returns:
      ``[N, H, W, C]`` float32.
    """
    hu = unwindow_hu(np.moveaxis(images, -1, 1))  # [N, C, H, W]
    n, c, h, w = hu.shape
    flat = hu.reshape(n * c, h, w)
    single = dataclasses.replace(profile, slice_thickness=1)
    out, _ = acquire(flat, None, single, rng)
    out = (out.reshape(n, c, h, w) + 600.0) / 1600.0
    return np.moveaxis(out, 1, -1).astype(np.float32)
