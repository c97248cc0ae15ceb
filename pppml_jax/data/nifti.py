"""NIfTI and NRRD volume I/O that honours orientation and spacing, with errors naming the file.

Volumes are returned in the closest canonical RAS+ orientation (array index ``i, j, k``
increasing towards the patient's Right, Anterior and Superior), as float32, with their voxel
spacing in millimetres.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

SPACES = {
    # NRRD "space" -> signs that map its axes to RAS (right, anterior, superior).
    "right-anterior-superior": (1.0, 1.0, 1.0),
    "ras": (1.0, 1.0, 1.0),
    "left-posterior-superior": (-1.0, -1.0, 1.0),
    "lps": (-1.0, -1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0),
    "las": (-1.0, 1.0, 1.0),
}


class VolumeFileError(ValueError):
    """A volume or mask file that cannot be read or does not match its partner."""


@dataclasses.dataclass(frozen=True)
class Volume:
    """A 3D image in canonical RAS+ voxel order.

    Attributes:
      data: ``[X, Y, Z]`` float32; indices grow towards the patient's Right, Anterior and
        Superior (RAS+).
      spacing: ``(sx, sy, sz)`` voxel size in millimetres.
      affine: ``[4, 4]`` voxel-to-world (RAS, mm) matrix of ``data``.
      path: the file it came from.
    """

    data: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    path: str


def read_volume(path: str | os.PathLike, *, kind: str = "volume") -> Volume:
    """Reads a NIfTI file (``.nii`` / ``.nii.gz``) as a :class:`Volume` in RAS+ order.

    The array is reoriented (axis permutations and flips only, no resampling) to the closest
    canonical orientation of its affine (RAS+, see :class:`Volume`); a 4D file holding a single
    volume is squeezed.

    Args:
      path: the file.
      kind: what the file is (``"CT volume"``, ``"mask"``), used in error messages.

    Raises:
      VolumeFileError: missing, unreadable or corrupt file, or not three-dimensional.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise VolumeFileError(f"{kind} file {path} does not exist")
    try:
        image = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel, gzip and zlib raise many different types
        raise VolumeFileError(
            f"cannot read {kind} file {path} as NIfTI: {type(exc).__name__}: {exc}"
        ) from exc
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise VolumeFileError(
            f"{kind} file {path} has shape {data.shape}; expected a 3D volume [X, Y, Z]"
        )
    if not np.all(np.isfinite(data)):
        raise VolumeFileError(f"{kind} file {path} contains NaN or infinite values")
    affine = np.asarray(image.affine, dtype=np.float64)
    spacing = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    return Volume(data=data, spacing=spacing, affine=affine, path=str(path))


Grid = tuple[tuple[int, ...], np.ndarray, str]
"""A voxel grid as ``(shape, affine, path)``: what :func:`check_grid` compares."""


def check_grid(image: Grid, mask: Grid, *, atol_mm: float = 1e-3) -> None:
    """Raises :class:`VolumeFileError` unless ``mask``'s grid equals ``image``'s (shape, affine).

    Args:
      image, mask: ``(shape, affine, path)`` of the CT volume and of its mask; the path is only
        named in the message.
      atol_mm: tolerance of the affines, millimetres.
    """
    (image_shape, image_affine, image_path), (mask_shape, mask_affine, mask_path) = image, mask
    if image_shape != mask_shape:
        raise VolumeFileError(
            f"mask {mask_path} has shape {mask_shape} but CT volume {image_path} has shape "
            f"{image_shape}; they must lie on the same voxel grid"
        )
    if not np.allclose(image_affine, mask_affine, atol=atol_mm):
        raise VolumeFileError(
            f"mask {mask_path} and CT volume {image_path} have different affines (voxel-to-world "
            "matrices); resample the mask onto the CT grid"
        )


def check_pair(image: Volume, mask: Volume, *, atol_mm: float = 1e-3) -> None:
    """Raises :class:`VolumeFileError` unless ``mask`` lies on the same voxel grid as ``image``."""
    check_grid(
        (image.data.shape, image.affine, image.path),
        (mask.data.shape, mask.affine, mask.path),
        atol_mm=atol_mm,
    )


def write_nifti(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray) -> Path:
    """Writes ``data: [X, Y, Z]`` with ``affine`` (RAS, mm) as NIfTI; returns the path."""
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    nib.save(image, str(path))
    return path


def nrrd_affine(header: dict) -> np.ndarray:
    """The ``[4, 4]`` voxel-to-RAS affine of an NRRD header (space directions and origin).

    Raises:
      ValueError: the header has no spatial information or an unsupported space.
    """
    space = str(header.get("space", "")).lower()
    if space not in SPACES:
        raise ValueError(f"NRRD space {space!r} is not supported; expected one of {sorted(SPACES)}")
    directions = np.asarray(header.get("space directions"), dtype=np.float64)
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    if directions.shape != (3, 3) or origin.shape != (3,):
        raise ValueError("NRRD header needs 3 'space directions' vectors and a 3D 'space origin'")
    affine = np.eye(4)
    affine[:3, :3] = directions.T  # column j: world step of voxel axis j
    affine[:3, 3] = origin
    return np.diag([*SPACES[space], 1.0]) @ affine


def nrrd_to_nifti(nrrd_path: str | os.PathLike, nifti_path: str | os.PathLike) -> Path:
    """Converts a 3D NRRD file to NIfTI, keeping voxel values, spacing and orientation.

    Raises:
      VolumeFileError: the NRRD file cannot be read, is not 3D or lacks spatial information.
    """
    import nrrd

    nrrd_path = Path(nrrd_path)
    try:
        data, header = nrrd.read(str(nrrd_path))
        affine = nrrd_affine(header)
    except Exception as exc:
        raise VolumeFileError(
            f"cannot convert NRRD file {nrrd_path}: {type(exc).__name__}: {exc}"
        ) from exc
    if data.ndim != 3:
        raise VolumeFileError(f"NRRD file {nrrd_path} has shape {data.shape}; expected 3D")
    return write_nifti(nifti_path, data, affine)
