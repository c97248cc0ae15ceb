"""TFDS builder ``covid_ct_seg``: NIfTI CT volumes and lesion masks, clients by device label.

Manual directory layout: the NIfTI files (``.nii`` or ``.nii.gz``) anywhere below it, and a
manifest CSV (default ``manifest.csv``) with one row per scan and the columns

- ``patient``: patient id (splits and folds are by patient);
- ``device``: the client, e.g. ``P_I256_1.0`` (vendor, model, slice thickness in mm);
- ``image``: path of the CT volume in HU, relative to the manual directory;
- ``mask``: path of the lesion label map on the same voxel grid (non-zero is lesion).

Volumes are read with nibabel in canonical RAS+ order, honouring each file's affine and voxel
spacing, and cut into 2D inputs along ``axis`` (:mod:`pppml_jax.data.slicing`: square pixels,
``size x size``, three adjacent slices as channels, ``(HU + 600) / 1600``). Example
``position`` is ``10000 * scan number of the patient + slice index``.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from pppml_jax.data.builders._common import (
    check_options,
    client_split,
    config_name,
    segmentation_features,
)
from pppml_jax.data.nifti import VolumeFileError, check_grid, check_pair, read_volume
from pppml_jax.data.slicing import AXES, volume_to_slices

MANIFEST_COLUMNS = ("patient", "device", "image", "mask")
SCAN_STRIDE = 10000


@dataclasses.dataclass(eq=False)
class CovidCtSegConfig(tfds.core.BuilderConfig):
    """Options of the build.

    Attributes:
      axis: slicing direction, ``"x"``, ``"y"`` or ``"z"`` (the paper trains one model each).
      size: output slice side in pixels (the paper: 512).
      stride: keep every ``stride``-th slice.
      manifest: manifest file name, relative to the manual directory.
      lower_hu, upper_hu: HU clip before windowing.
      source: the manual directory (only to make the config name unique per data source).
    """

    axis: str = "z"
    size: int = 128
    stride: int = 1
    manifest: str = "manifest.csv"
    lower_hu: float = -1024.0
    upper_hu: float = 3071.0
    source: str = ""


def make_config(manual_dir: str | Path, **options) -> CovidCtSegConfig:
    """A config for ``manual_dir`` and ``options`` (fields of :class:`CovidCtSegConfig`)."""
    check_options("covid_ct_seg", CovidCtSegConfig, options)
    if options.get("axis", "z") not in AXES:
        raise ValueError(f"axis={options['axis']!r} is not one of {AXES}")
    options = {**options, "source": str(Path(manual_dir).resolve())}
    prefix = f"{options.get('axis', 'z')}_{options.get('size', 128)}"
    return CovidCtSegConfig(name=config_name(prefix, options), **options)


def read_manifest(manual_dir: Path, name: str = "manifest.csv") -> list[dict[str, str]]:
    """The manifest rows, with ``image`` and ``mask`` resolved to absolute paths.

    Raises:
      ValueError: missing manifest, missing column, empty field or a file that does not exist
        (the message names the manifest line and the file).
    """
    path = manual_dir / name
    if not path.is_file():
        raise ValueError(
            f"manifest {path} does not exist; write a CSV with the columns "
            f"{', '.join(MANIFEST_COLUMNS)}"
        )
    rows = []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"manifest {path} lacks column(s) {missing}; it has {reader.fieldnames}"
            )
        for line, row in enumerate(reader, start=2):
            row = {k: (row[k] or "").strip() for k in MANIFEST_COLUMNS}
            empty = [k for k, v in row.items() if not v]
            if empty:
                raise ValueError(f"{path}:{line}: empty field(s) {empty}")
            for key in ("image", "mask"):
                file = Path(row[key])
                file = file if file.is_absolute() else manual_dir / file
                if not file.is_file():
                    raise ValueError(f"{path}:{line}: {key} file {file} does not exist")
                row[key] = str(file)
            rows.append(row)
    if not rows:
        raise ValueError(f"manifest {path} has no rows")
    return rows


def check_headers(image_path: str, mask_path: str) -> None:
    """Checks dimensionality, shapes and affines from the NIfTI headers (no voxel data read).

    Raises:
      VolumeFileError: unreadable header, not 3D, or image / mask grids differ.
    """
    import nibabel as nib

    headers = []
    for path, kind in ((image_path, "CT volume"), (mask_path, "mask")):
        try:
            image = nib.load(path)
        except Exception as exc:
            raise VolumeFileError(
                f"cannot read {kind} file {path} as NIfTI: {type(exc).__name__}: {exc}"
            ) from exc
        shape = tuple(image.shape)
        if len(shape) == 4 and shape[-1] == 1:
            shape = shape[:3]
        if len(shape) != 3:
            raise VolumeFileError(f"{kind} file {path} has shape {shape}; expected a 3D volume")
        headers.append((shape, np.asarray(image.affine), path))
    check_grid(*headers)


class CovidCtSeg(tfds.core.GeneratorBasedBuilder):
    """CT lesion segmentation from NIfTI volume / mask pairs, one split per device."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 - TFDS class attribute
    BUILDER_CONFIGS = [  # noqa: RUF012 - TFDS class attribute
        CovidCtSegConfig(name=f"{axis}_128", axis=axis, size=128) for axis in AXES
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="CT volumes with lesion masks, 2D slices with 3 adjacent channels.",
            features=segmentation_features(self.builder_config.size),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        rows = read_manifest(Path(dl_manager.manual_dir), config.manifest)
        for row in rows:
            check_headers(row["image"], row["mask"])
        devices = sorted({row["device"] for row in rows})
        self.info.metadata["clients"] = [
            {"name": device, "profile": {"device": device}} for device in devices
        ]
        return {
            client_split(i): self._generate_examples([r for r in rows if r["device"] == device])
            for i, device in enumerate(devices)
        }

    def _generate_examples(self, rows):
        config = self.builder_config
        scans: dict[str, int] = {}
        for row in rows:
            scan = scans.get(row["patient"], 0)
            scans[row["patient"]] = scan + 1
            image = read_volume(row["image"], kind="CT volume")
            mask = read_volume(row["mask"], kind="mask")
            # Not redundant with check_headers: reorienting to RAS+ moves the origin of a
            # flipped axis by (n - 1) voxel steps, which can push affines that agreed in the
            # headers apart by more than the tolerance.
            check_pair(image, mask)
            images, masks, positions = volume_to_slices(
                image.data,
                mask.data,
                image.spacing,
                axis=config.axis,
                size=config.size,
                stride=config.stride,
                lower_hu=config.lower_hu,
                upper_hu=config.upper_hu,
            )
            for image_2d, mask_2d, position in zip(images, masks, positions, strict=True):
                position = SCAN_STRIDE * scan + int(position)
                yield (
                    f"{row['patient']}/{position}",
                    {
                        "image": image_2d,
                        "mask": mask_2d,
                        "label": int(mask_2d.any()),
                        "patient": row["patient"],
                        "position": position,
                    },
                )
