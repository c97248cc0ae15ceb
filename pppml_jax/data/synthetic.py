"""The embedded synthetic chest-CT federation: phantoms imaged by simulated devices, in memory.

Every client is a :class:`~pppml_jax.data.devices.DeviceProfile`; its patients are drawn from
:func:`~pppml_jax.data.phantom.chest_phantom` with a generator seeded by
``(seed, client index, patient index)``, so a client's data never depends on the others.

- ``task="segmentation"``: 2D slices ``[S, S, 3]`` (a slice and its two neighbours in the
  device's own slice grid, windowed as ``(HU + 600) / 1600``) with the lesion mask of the
  centre slice; ``slices_per_patient`` slices evenly spaced through each patient's slab. Every
  patient is infected (infection-to-lung ratio 0.03 to 0.35), like the paper's COVID-19 cohort.
- ``task="classification"``: one volume ``[depth, S, S, 1]`` per patient (thick slices
  zero-padded back to ``depth``, centred, as the paper's slice-thickness simulation) with the
  label "infection-to-lung ratio > 0.1"; a profile's ``prevalence`` sets its label balance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pppml_jax.data._ops import pad_depth, window_hu
from pppml_jax.data.devices import DeviceProfile, acquire, resolve_profiles
from pppml_jax.data.phantom import chest_phantom, draw_target_ratio
from pppml_jax.data.slicing import slice_stack
from pppml_jax.data.splits import SplitSpec, split_pool
from pppml_jax.data.types import ClientPool, FederatedDataset

DEFAULTS: dict[str, dict[str, Any]] = {
    "segmentation": {"image_size": 64, "depth": 48, "slices_per_patient": 10},
    "classification": {"image_size": 32, "depth": 40, "slices_per_patient": 1},
}
THIN_MM = 1.25
"""Thin-slice spacing of the phantoms, millimetres (a profile's thickness is a multiple)."""


def resolve_options(
    task: str,
    image_size: int | None = None,
    depth: int | None = None,
    slices_per_patient: int | None = None,
) -> tuple[int, int, int]:
    """``(image_size, depth, slices_per_patient)`` with :data:`DEFAULTS` for ``task`` filled in.

    Raises:
      ValueError: ``task`` is not a key of :data:`DEFAULTS`.
    """
    if task not in DEFAULTS:
        raise ValueError(f"task={task!r} is not one of {sorted(DEFAULTS)}")
    defaults = DEFAULTS[task]
    return (
        int(image_size or defaults["image_size"]),
        int(depth or defaults["depth"]),
        int(slices_per_patient or defaults["slices_per_patient"]),
    )


def _patient(
    seed: int, client: int, patient: int, profile: DeviceProfile, size: int, depth: int, task: str
):
    rng = np.random.default_rng([seed, client, patient])
    target = draw_target_ratio(
        rng, prevalence=profile.prevalence, infected_only=task == "segmentation"
    )
    phantom = chest_phantom(rng, size=size, depth=depth, slice_mm=THIN_MM, target_ratio=target)
    hu, mask = acquire(
        phantom.hu, phantom.lesion, profile, np.random.default_rng([seed, client, patient, 1])
    )
    return phantom, hu, mask


def synthetic_pools(
    *,
    task: str = "segmentation",
    profiles: str | Sequence[DeviceProfile | dict] = "quickstart",
    image_size: int | None = None,
    depth: int | None = None,
    slices_per_patient: int | None = None,
    seed: int = 0,
) -> list[ClientPool]:
    """Generates every client's examples (before splitting).

    Args:
      task: ``"segmentation"`` or ``"classification"``.
      profiles: a preset name of :data:`~pppml_jax.data.devices.PRESETS` or device profiles.
      image_size: in-plane pixels S (default 64 for segmentation, 32 for classification).
      depth: thin slices per patient (default 48 / 40).
      slices_per_patient: 2D slices per patient (segmentation; default 10); fewer when a thick
        device has fewer interior slices.
      seed: the generator's seed.

    Returns:
      one :class:`ClientPool` per profile, in order.
    """
    size, depth, per_patient = resolve_options(task, image_size, depth, slices_per_patient)
    if size < 16 or size % 8:
        raise ValueError(f"image_size={size} must be a multiple of 8 and >= 16")
    if per_patient < 1:
        raise ValueError(f"slices_per_patient={per_patient} must be >= 1")
    pools = []
    for c, profile in enumerate(resolve_profiles(profiles)):
        images, masks, labels, patients, positions = [], [], [], [], []
        for p in range(profile.num_patients):
            phantom, hu, mask = _patient(seed, c, p, profile, size, depth, task)
            pid = f"c{c}_p{p:03d}"
            if task == "segmentation":
                n_thick = hu.shape[0]
                interior = np.arange(1, n_thick - 1) if n_thick > 2 else np.arange(n_thick)
                take = min(per_patient, len(interior))
                index = np.unique(np.rint(np.linspace(0, len(interior) - 1, take)).astype(int))
                index = interior[index]
                images.append(slice_stack(window_hu(hu), index))
                masks.append(mask[index])
                labels.append(mask[index].reshape(len(index), -1).max(axis=1))
                patients += [pid] * len(index)
                positions.append(index)
            else:
                volume = pad_depth(window_hu(hu), depth)[..., None]
                images.append(volume[None])
                labels.append(np.array([phantom.label]))
                patients.append(pid)
                positions.append(np.array([0]))
        arrays = {
            "image": np.concatenate(images).astype(np.float32),
            "label": np.concatenate(labels).astype(np.int32),
        }
        if task == "segmentation":
            arrays["mask"] = np.concatenate(masks).astype(np.uint8)
        pools.append(
            ClientPool(
                name=profile.display_name(THIN_MM),
                profile=profile.to_dict(THIN_MM, size),
                arrays=arrays,
                patient=np.array(patients, dtype=object),
                position=np.concatenate(positions).astype(np.int32),
            )
        )
    names = [pool.name for pool in pools]
    if len(set(names)) != len(names):
        raise ValueError(f"device profiles give duplicate client names {names}; set distinct names")
    return pools


def synthetic_federation(
    *,
    task: str = "segmentation",
    profiles: str | Sequence[DeviceProfile | dict] = "quickstart",
    image_size: int | None = None,
    depth: int | None = None,
    slices_per_patient: int | None = None,
    seed: int = 0,
    split: SplitSpec | None = None,
) -> FederatedDataset:
    """The synthetic chest-CT federation, generated in memory (see the module docstring).

    Args:
      task, profiles, image_size, depth, slices_per_patient, seed: see :func:`synthetic_pools`.
      split: how to split each client by patient; default ``SplitSpec(seed=seed)``.

    Returns:
      a :class:`FederatedDataset` with ``num_classes == 2``.

    Example::

        fed = synthetic_federation(task="segmentation", profiles="quickstart", seed=0)
        fed.clients[0].train["image"].shape   # (60, 64, 64, 3)
    """
    split = split or SplitSpec(seed=seed)
    pools = synthetic_pools(
        task=task,
        profiles=profiles,
        image_size=image_size,
        depth=depth,
        slices_per_patient=slices_per_patient,
        seed=seed,
    )
    return federation_from_pools(
        "synthetic_chest_ct", task, pools, split, info=synthetic_info(task)
    )


def synthetic_info(task: str) -> dict[str, Any]:
    """The provenance recorded in a synthetic federation's ``info``."""
    return {
        "source": "synthetic chest-CT phantoms (pppml_jax.data.phantom), simulated devices",
        "thin_slice_mm": THIN_MM,
        "window": "(HU + 600) / 1600",
        "label": "infection-to-lung volume ratio > 0.1"
        if task == "classification"
        else "slice has any lesion pixel",
    }


def federation_from_pools(
    name: str,
    task: str,
    pools: Sequence[ClientPool],
    split: SplitSpec,
    *,
    num_classes: int = 2,
    info: dict[str, Any] | None = None,
) -> FederatedDataset:
    """Splits every pool with ``split`` and assembles the :class:`FederatedDataset`."""
    clients = tuple(split_pool(pool, split) for pool in pools)
    details = dict(info or {})
    details["split"] = {
        "method": split.method,
        "seed": split.seed,
        "val_fraction": split.val_fraction,
    }
    if split.method == "slab":
        details["split"].update({"test_fraction": split.test_fraction, "slab_size": split.slab_size,
                                 "slab_gap": split.slab_gap})  # fmt: skip
    elif split.num_folds is None:
        details["split"]["test_fraction"] = split.test_fraction
    else:
        details["split"].update({"num_folds": split.num_folds, "test_fold": split.test_fold})
    return FederatedDataset(
        name=name, task=task, num_classes=num_classes, clients=clients, info=details
    )
