"""TFDS builder ``rad_chestct``: RAD-ChestCT volumes grouped into clients by a split CSV.

Manual download (access on request: Zenodo record 6406114). Put in one directory:

- the volumes, ``<id>.npz`` files anywhere below it (as distributed: ``np.savez_compressed``
  with key ``ct``, int16 HU, ``[slices, H, W]``, axial slices first);
- a split CSV (default ``split.csv``) with one row per volume and columns ``NoteAcc_DEID``
  (the volume id, i.e. the file stem), ``client`` (the client, e.g. ``0``/``1``/``2`` as in the
  paper's ``new_c3_split1.csv``, or a scanner model) and the 0/1 label column (default
  ``binary_infection_to_lung_ratio``, the paper's). Column names are options.

Each volume is preprocessed as the paper did (:func:`pppml_jax.data.lung_crop.preprocess_volume`:
lung crop, 70 central slices, 70 x 70 x 70, ``(HU + 600) / 1600``) and stored as
``[70, 70, 70, 1]`` float32. The paper's slice-thickness heterogeneity (1 / 5 / 10) is applied
when loading (``load_federation("rad_chestct", thickness=(1, 5, 10))``), so one build serves
every setting.
"""

from __future__ import annotations

import csv
import dataclasses
import zipfile
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from pppml_jax.data.builders._common import (
    check_options,
    classification_features,
    client_split,
    config_name,
)
from pppml_jax.data.lung_crop import preprocess_volume
from pppml_jax.data.nifti import VolumeFileError


@dataclasses.dataclass(eq=False)
class RadChestCtConfig(tfds.core.BuilderConfig):
    """Options of the RAD-ChestCT build.

    Attributes:
      split_csv: CSV file name, relative to the manual directory.
      id_column: column holding the volume id (the ``.npz`` file stem).
      client_column: column whose value is the client.
      label_column: column holding the 0/1 label.
      patient_column: column holding a patient id ("" to treat each volume as a patient).
      size: output side of the cubic volume.
      crop: crop to the lung bounding box before resizing.
      source: the manual directory (only to make the config name unique per data source).
    """

    split_csv: str = "split.csv"
    id_column: str = "NoteAcc_DEID"
    client_column: str = "client"
    label_column: str = "binary_infection_to_lung_ratio"
    patient_column: str = ""
    size: int = 70
    crop: bool = True
    source: str = ""


def make_config(manual_dir: str | Path, **options) -> RadChestCtConfig:
    """A config for ``manual_dir`` and ``options`` (fields of :class:`RadChestCtConfig`)."""
    check_options("rad_chestct", RadChestCtConfig, options)
    options = {**options, "source": str(Path(manual_dir).resolve())}
    return RadChestCtConfig(name=config_name("rad", options), **options)


def read_split_csv(path: Path, config: RadChestCtConfig) -> list[dict[str, str]]:
    """Rows of the split CSV with the configured columns checked.

    Raises:
      ValueError: missing file, missing column, empty id, a label that is not 0/1, or a
        repeated id (the message names the file and the row).
    """
    if not path.is_file():
        raise ValueError(f"split CSV {path} does not exist; see the rad_chestct instructions")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [config.id_column, config.client_column, config.label_column]
        if config.patient_column:
            columns.append(config.patient_column)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"split CSV {path} lacks column(s) {missing}; it has {reader.fieldnames}"
            )
        rows, seen = [], set()
        for line, row in enumerate(reader, start=2):
            volume_id = (row[config.id_column] or "").strip()
            if not volume_id:
                raise ValueError(f"{path}:{line}: empty {config.id_column}")
            if volume_id in seen:
                raise ValueError(f"{path}:{line}: volume {volume_id!r} is listed twice")
            seen.add(volume_id)
            try:
                label = float(row[config.label_column])
            except ValueError as exc:
                raise ValueError(
                    f"{path}:{line}: {config.label_column}={row[config.label_column]!r} is not a "
                    "number"
                ) from exc
            if label not in (0.0, 1.0):
                raise ValueError(
                    f"{path}:{line}: {config.label_column}={row[config.label_column]!r}; labels "
                    "must be 0 or 1"
                )
            rows.append(row)
    if not rows:
        raise ValueError(f"split CSV {path} has no rows")
    return rows


def load_npz_volume(path: Path) -> np.ndarray:
    """The ``[slices, H, W]`` HU array of a RAD-ChestCT ``.npz`` (key ``ct``, or its only array).

    Raises:
      VolumeFileError: unreadable or corrupt file, no ``ct`` array, or not 3D.
    """
    try:
        with np.load(path) as archive:
            keys = list(archive.keys())
            key = "ct" if "ct" in keys else keys[0] if len(keys) == 1 else None
            if key is None:
                raise VolumeFileError(
                    f"volume file {path} has arrays {keys} but no 'ct'; save the volume as 'ct'"
                )
            volume = np.asarray(archive[key])
    except VolumeFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise VolumeFileError(
            f"cannot read volume file {path}: {type(exc).__name__}: {exc}"
        ) from exc
    if volume.ndim != 3:
        raise VolumeFileError(
            f"volume file {path} holds an array of shape {volume.shape}; expected [slices, H, W]"
        )
    return volume


class RadChestct(tfds.core.GeneratorBasedBuilder):
    """RAD-ChestCT, preprocessed as in PPPML-HMI, one split per client."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 - TFDS class attribute
    BUILDER_CONFIGS = [RadChestCtConfig(name="default")]  # noqa: RUF012 - TFDS class attribute
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.size
        return tfds.core.DatasetInfo(
            builder=self,
            description="RAD-ChestCT (Draelos et al.), lung-cropped to 70^3 as in PPPML-HMI.",
            features=classification_features((size, size, size, 1)),
            homepage="https://zenodo.org/record/6406114",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        manual_dir = Path(dl_manager.manual_dir)
        rows = read_split_csv(manual_dir / config.split_csv, config)
        files: dict[str, Path] = {}
        for path in sorted(manual_dir.rglob("*.npz")):
            if path.stem in files:
                raise ValueError(f"volume id {path.stem!r} is both {files[path.stem]} and {path}")
            files[path.stem] = path
        missing = [r[config.id_column] for r in rows if r[config.id_column].strip() not in files]
        if missing:
            raise ValueError(
                f"{len(missing)} volume(s) listed in {config.split_csv} have no .npz file under "
                f"{manual_dir}, e.g. {missing[:3]}"
            )
        clients = sorted({r[config.client_column].strip() for r in rows})
        self.info.metadata["clients"] = [
            {"name": name, "profile": {"device": name, "column": config.client_column}}
            for name in clients
        ]
        return {
            client_split(i): self._generate_examples(
                [r for r in rows if r[config.client_column].strip() == name], files
            )
            for i, name in enumerate(clients)
        }

    def _generate_examples(self, rows, files):
        config = self.builder_config
        for row in rows:
            volume_id = row[config.id_column].strip()
            hu = load_npz_volume(files[volume_id])
            if hu.dtype.kind not in "iu":
                # Integer HU (as distributed) is cast by preprocess_volume after cropping;
                # other types are cast first: rounding float64 to float32 can move a value
                # across the lung mask's HU threshold.
                hu = hu.astype(np.float32, copy=False)
            volume = preprocess_volume(hu, size=config.size, crop=config.crop)
            patient = row[config.patient_column].strip() if config.patient_column else volume_id
            yield (
                volume_id,
                {
                    "image": volume[..., None],
                    "label": int(float(row[config.label_column])),
                    "patient": patient,
                    "position": 0,
                },
            )
