"""TFDS builder ``image_folder``: generic image classification from a folder tree.

Layouts of the manual directory (``layout`` option):

- ``"class"``: ``<class>/<file>``; the clients are made when loading, by dealing patients to
  simulated devices (``load_federation("image_folder", profiles=...)``);
- ``"client/class"``: ``<client>/<class>/<file>``; one client per top-level folder.

Files: PNG / JPEG (8- or 16-bit, colour converted to grey) scaled to ``[0, 1]``, and NIfTI
(``.nii`` / ``.nii.gz``; for a 3D volume the middle slice along its third canonical axis)
scaled by min-max or HU-windowed. Every image is resized to ``size x size`` with one channel.
A patient is a file, or the first group of ``patient_regex`` matched against the file stem
(so several images of one patient stay in one split). Class indices follow the sorted class
folder names, the same for every client.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from pppml_jax.data._ops import resize, window_hu
from pppml_jax.data.builders._common import (
    check_options,
    classification_features,
    client_split,
    config_name,
)
from pppml_jax.data.nifti import VolumeFileError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
LAYOUTS = ("class", "client/class")


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
    """Options of the build.

    Attributes:
      size: output side in pixels.
      layout: ``"class"`` or ``"client/class"``.
      nifti_intensity: ``"minmax"`` (scale each image to [0, 1]) or ``"hu"`` (``(HU+600)/1600``).
      patient_regex: regex whose first group is the patient id of a file stem ("" = the stem).
      source: the manual directory (only to make the config name unique per data source).
    """

    size: int = 64
    layout: str = "class"
    nifti_intensity: str = "minmax"
    patient_regex: str = ""
    source: str = ""


class OneClassWarning(UserWarning):
    """An image folder holds a single class: every label is the same and accuracy means nothing."""


def make_config(manual_dir: str | Path, **options) -> ImageFolderConfig:
    """A config for ``manual_dir`` and ``options`` (fields of :class:`ImageFolderConfig`).

    The folder tree is scanned first (:func:`scan_tree`), so that an empty or malformed folder
    is refused with a clear message before TFDS is asked to build anything.

    Raises:
      ValueError: an unknown option or value, or a folder without class folders or images.

    Warns:
      OneClassWarning: the folder holds a single class.
    """
    check_options("image_folder", ImageFolderConfig, options)
    if options.get("layout", "class") not in LAYOUTS:
        raise ValueError(f"layout={options['layout']!r} is not one of {LAYOUTS}")
    if options.get("nifti_intensity", "minmax") not in ("minmax", "hu"):
        raise ValueError(f"nifti_intensity={options['nifti_intensity']!r}: use 'minmax' or 'hu'")
    _, classes, _ = scan_tree(Path(manual_dir), options.get("layout", "class"))
    if len(classes) < 2:
        warnings.warn(
            f"image folder {manual_dir} holds one class ({classes[0]!r}): every label is the "
            "same, so a model scores accuracy 1.0 without learning anything; add a folder per "
            "class",
            OneClassWarning,
            stacklevel=2,
        )
    options = {**options, "source": str(Path(manual_dir).resolve())}
    return ImageFolderConfig(name=config_name("images", options), **options)


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    return (
        path.is_file()
        and not name.startswith(".")
        and name.endswith(IMAGE_SUFFIXES + NIFTI_SUFFIXES)
    )


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", *IMAGE_SUFFIXES, ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_image(path: Path, *, nifti_intensity: str = "minmax") -> np.ndarray:
    """A 2D float32 image in ``[0, 1]`` (PNG / JPEG) or scaled as configured (NIfTI).

    Raises:
      VolumeFileError: the file cannot be decoded, or a NIfTI file is not 2D or 3D.
    """
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        import nibabel as nib

        try:
            data = np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj, np.float32)
        except Exception as exc:
            raise VolumeFileError(
                f"cannot read image file {path} as NIfTI: {type(exc).__name__}: {exc}"
            ) from exc
        data = np.squeeze(data)
        if data.ndim == 3:
            data = data[:, :, data.shape[2] // 2]
        if data.ndim != 2:
            raise VolumeFileError(f"image file {path} has shape {data.shape}; expected 2D or 3D")
        data = np.rot90(data)  # anterior (or the second axis) at the top
        if nifti_intensity == "hu":
            return window_hu(data)
        low, high = float(data.min()), float(data.max())
        return ((data - low) / (high - low) if high > low else np.zeros_like(data)).astype(
            np.float32
        )
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(image, dtype=np.float32) / 65535.0
            if image.mode == "I":
                array = np.asarray(image, dtype=np.float32)
                return array / max(1.0, float(array.max()))
            return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except Exception as exc:
        raise VolumeFileError(
            f"cannot decode image file {path}: {type(exc).__name__}: {exc}"
        ) from exc


def scan_tree(manual_dir: Path, layout: str) -> tuple[list[str], list[str], list[tuple]]:
    """``(clients, classes, [(client, class, path), ...])`` found under ``manual_dir``.

    Raises:
      ValueError: no class folders, or a class folder without a supported file.
    """
    if not manual_dir.is_dir():
        raise ValueError(f"image folder {manual_dir} does not exist")
    groups = (
        [("all", manual_dir)]
        if layout == "class"
        else [
            (d.name, d)
            for d in sorted(manual_dir.iterdir())
            if d.is_dir() and not d.name.startswith(".")
        ]
    )
    if not groups:
        raise ValueError(
            f"image folder {manual_dir} has no client sub-folders; expected "
            f"{manual_dir}/<client>/<class>/<image files> (layout={layout!r})"
        )
    entries = []
    classes = set()
    for client, root in groups:
        class_dirs = [
            d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
        ]
        if not class_dirs:
            raise ValueError(
                f"{root} has no class sub-folders; expected {root}/<class>/<image files> "
                f"(layout={layout!r})"
            )
        for class_dir in class_dirs:
            files = [p for p in sorted(class_dir.rglob("*")) if _is_image(p)]
            if not files:
                raise ValueError(f"class folder {class_dir} has no PNG, JPEG or NIfTI file")
            classes.add(class_dir.name)
            entries += [(client, class_dir.name, path) for path in files]
    return [g[0] for g in groups], sorted(classes), entries


class ImageFolder(tfds.core.GeneratorBasedBuilder):
    """Classification images from ``<class>/`` folders (optionally below ``<client>/``)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 - TFDS class attribute
    BUILDER_CONFIGS = [ImageFolderConfig(name="default")]  # noqa: RUF012 - TFDS class attribute
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.size
        return tfds.core.DatasetInfo(
            builder=self,
            description="Images from class folders, resized to a square grey image.",
            features=classification_features((size, size, 1)),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        clients, classes, entries = scan_tree(Path(dl_manager.manual_dir), config.layout)
        self.info.metadata["classes"] = classes
        self.info.metadata["clients"] = [
            {"name": c, "profile": {"device": c, "layout": config.layout}} for c in clients
        ]
        return {
            client_split(i): self._generate_examples(
                [e for e in entries if e[0] == client], classes
            )
            for i, client in enumerate(clients)
        }

    def _generate_examples(self, entries, classes):
        config = self.builder_config
        pattern = re.compile(config.patient_regex) if config.patient_regex else None
        counts: dict[str, int] = {}
        for _, class_name, path in entries:
            stem = _stem(path)
            patient = stem
            if pattern is not None:
                match = pattern.search(stem)
                if match is None or not match.groups():
                    raise ValueError(
                        f"patient_regex={config.patient_regex!r} has no group matching the file "
                        f"{path}"
                    )
                patient = match.group(1)
            image = read_image(path, nifti_intensity=config.nifti_intensity)
            image = resize(image, (config.size, config.size), axes=(0, 1))
            position = counts.get(patient, 0)
            counts[patient] = position + 1
            yield (
                str(path.relative_to(path.parents[1])),
                {
                    "image": image[..., None].astype(np.float32),
                    "label": classes.index(class_name),
                    "patient": patient,
                    "position": position,
                },
            )
