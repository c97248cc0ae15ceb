"""``load_federation(name, **options)``: from a config to a :class:`FederatedDataset`.

Names and their options (all keyword; the split options below apply to every name):

- ``"synthetic_chest_ct"``: ``task`` ("segmentation" | "classification"), ``profiles`` (a
  preset name or a list of profile dicts), ``image_size``, ``depth``, ``slices_per_patient``,
  ``seed``; ``via_tfds`` (build and read the TFDS data set instead of generating in memory;
  same arrays), ``data_dir``, ``rebuild``.
- ``"rad_chestct"``: ``manual_dir`` (required), ``data_dir``, ``rebuild``, ``thickness`` (slices
  averaged per client, default the paper's ``(1, 5, 10)``; ``None`` for none), and the builder
  options ``split_csv``, ``id_column``, ``client_column``, ``label_column``, ``patient_column``,
  ``size``, ``crop``.
- ``"covid_ct_seg"``: ``manual_dir`` (required), ``data_dir``, ``rebuild``, ``axis``, ``size``,
  ``stride``, ``manifest``, ``lower_hu``, ``upper_hu``; by default 5 folds by patient, fold 0 test.
- ``"image_folder"``: ``manual_dir`` (required), ``data_dir``, ``rebuild``, ``size``, ``layout``,
  ``nifti_intensity``, ``patient_regex``; with ``layout="class"``, ``profiles`` (default
  ``"quickstart"``) deals the patients to simulated devices.
- ``"real_ct"``: ``root`` (where ``pppml data real-ct`` wrote, default
  ``<data_root>/real_ct``), ``download`` (prepare it when missing, default True), ``sdist``,
  ``data_dir``, ``rebuild``, ``axis``, ``size``, ``stride``; split by slab by default.
  ``task="classification"`` turns the slices of both scans into a 2-D classification
  federation with simulated devices: ``label`` ("cranial": the slice lies in the upper half of
  its scan's slices, superior in RAS+; "tumour": the slice's label map marks tumour),
  ``patient_slab`` (consecutive slices per pseudo-patient, default 4), ``profiles`` (device
  preset or profile dicts, default ``"quickstart"``); split by pseudo-patient.

Split options: ``split`` ("patient" | "slab"), ``seed``, ``val_fraction``, ``test_fraction``,
``num_folds``, ``test_fold``, ``slab_size``, ``slab_gap``
(:class:`~pppml_jax.data.splits.SplitSpec`).

Size: about 455 lines, over the project's 400, because it is the one place that maps every
data-set name to its options and loader (the documentation above lists them all).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pppml_jax.data.devices import acquire_images, resolve_profiles
from pppml_jax.data.splits import SplitSpec
from pppml_jax.data.synthetic import federation_from_pools, synthetic_federation, synthetic_info
from pppml_jax.data.types import ClientPool, FederatedDataset

SPLIT_OPTIONS = (
    "split",
    "seed",
    "val_fraction",
    "test_fraction",
    "num_folds",
    "test_fold",
    "slab_size",
    "slab_gap",
)


def _split_spec(options: dict[str, Any], defaults: Mapping[str, Any]) -> SplitSpec:
    merged = {**defaults, **{k: options.pop(k) for k in SPLIT_OPTIONS if k in options}}
    method = merged.pop("split", "patient")
    return SplitSpec(method=method, **merged)


def _check_options(name: str, options: Mapping[str, Any], allowed: Collection[str]) -> None:
    unknown = sorted(set(options) - set(allowed) - set(SPLIT_OPTIONS))
    if unknown:
        raise ValueError(
            f"load_federation({name!r}) got unknown option(s) {unknown}; valid options are "
            f"{sorted(set(allowed) | set(SPLIT_OPTIONS))}"
        )


def _manual_dir(name: str, options: dict[str, Any]) -> Path:
    if "manual_dir" not in options:
        raise ValueError(
            f"load_federation({name!r}) needs manual_dir=<directory with the raw files>; see "
            "docs/data.md for its layout"
        )
    path = Path(options.pop("manual_dir")).expanduser()
    if not path.is_dir():
        raise ValueError(f"manual_dir={str(path)!r} is not a directory")
    return path


def _builder_options(config_cls: type, *extra: str) -> set[str]:
    """The options of a TFDS loader: the builder config's fields (less ``source``) and ``extra``."""
    from pppml_jax.data.builders._common import config_fields

    return (config_fields(config_cls) - {"source"}) | set(extra)


class _Built(NamedTuple):
    config: Any
    name: str
    pools: list[ClientPool]
    metadata: Mapping[str, Any]


def _tfds_pools(
    builder_module, builder_cls_name: str, manual_dir: Path | None, options: dict[str, Any]
) -> _Built:
    """Builds (or reuses) the data set of ``builder_module`` and reads it back.

    ``data_dir`` and ``rebuild`` are taken from ``options``; the rest go to the module's
    ``make_config`` (after ``manual_dir`` unless it is ``None``).
    """
    from pppml_jax.data.builders import _common
    from pppml_jax.data.paths import tfds_dir

    data_dir = Path(options.pop("data_dir", None) or tfds_dir())
    rebuild = bool(options.pop("rebuild", False))
    args = () if manual_dir is None else (manual_dir,)
    config = builder_module.make_config(*args, **options)
    name = _common.build(
        getattr(builder_module, builder_cls_name),
        config,
        data_dir=data_dir,
        manual_dir=manual_dir,
        rebuild=rebuild,
    )
    pools, metadata = _common.read_pools(name, data_dir=data_dir)
    return _Built(config, name, pools, metadata)


def _load_synthetic(options: dict[str, Any]) -> FederatedDataset:
    _check_options(
        "synthetic_chest_ct",
        options,
        (
            "task",
            "profiles",
            "image_size",
            "depth",
            "slices_per_patient",
            "via_tfds",
            "data_dir",
            "rebuild",
        ),
    )
    seed = int(options.get("seed", 0))
    split = _split_spec(options, {"seed": seed})
    via_tfds = bool(options.pop("via_tfds", False))
    tfds_options = {k: options.pop(k) for k in ("data_dir", "rebuild") if k in options}
    task = options.get("task", "segmentation")
    if not via_tfds:
        return synthetic_federation(**options, seed=seed, split=split)
    from pppml_jax.data.builders import synthetic_chest_ct

    built = _tfds_pools(
        synthetic_chest_ct, "SyntheticChestCt", None, {**options, **tfds_options, "seed": seed}
    )
    return federation_from_pools(
        "synthetic_chest_ct",
        task,
        built.pools,
        split,
        info={**synthetic_info(task), "tfds": built.name},
    )


def _load_rad(options: dict[str, Any]) -> FederatedDataset:
    from pppml_jax.data.builders import rad_chestct
    from pppml_jax.data.lung_crop import simulate_slice_thickness

    _check_options(
        "rad_chestct",
        options,
        _builder_options(
            rad_chestct.RadChestCtConfig, "manual_dir", "data_dir", "rebuild", "thickness"
        ),
    )
    manual_dir = _manual_dir("rad_chestct", options)
    split = _split_spec(options, {})
    thickness = options.pop("thickness", "paper")
    pools = _tfds_pools(rad_chestct, "RadChestct", manual_dir, options).pools
    if thickness == "paper":
        if len(pools) > 3:
            raise ValueError(
                f"the paper's thickness simulation has 3 settings (1, 5, 10) but there are "
                f"{len(pools)} clients; pass thickness=[...] with one value per client"
            )
        thickness = (1, 5, 10)[: len(pools)]
    if thickness is not None:
        if len(thickness) != len(pools):
            raise ValueError(
                f"thickness={list(thickness)} has {len(thickness)} values for {len(pools)} clients"
            )
        pools = [
            dataclasses.replace(
                pool,
                profile={**pool.profile, "slice_thickness": int(k)},
                arrays={
                    **pool.arrays,
                    "image": np.stack(
                        [simulate_slice_thickness(v, int(k)) for v in pool.arrays["image"]]
                    ),
                },
            )
            for pool, k in zip(pools, thickness, strict=True)
        ]
    return federation_from_pools(
        "rad_chestct",
        "classification",
        pools,
        split,
        info={
            "source": f"RAD-ChestCT (Draelos et al., Zenodo 6406114) from {manual_dir}",
            "preprocessing": "lung crop, 70 central slices, 70x70x70, (HU + 600) / 1600",
            "thickness": list(thickness) if thickness is not None else None,
        },
    )


def _load_covid(options: dict[str, Any], *, name: str = "covid_ct_seg") -> FederatedDataset:
    from pppml_jax.data.builders import covid_ct_seg

    _check_options(
        name,
        options,
        _builder_options(covid_ct_seg.CovidCtSegConfig, "manual_dir", "data_dir", "rebuild"),
    )
    manual_dir = _manual_dir(name, options)
    split = _split_spec(options, {"num_folds": 5, "test_fold": 0})
    pools = _tfds_pools(covid_ct_seg, "CovidCtSeg", manual_dir, options).pools
    return federation_from_pools(
        name,
        "segmentation",
        pools,
        split,
        info={
            "source": f"NIfTI CT volumes and lesion masks from {manual_dir}",
            "preprocessing": "RAS+ reorientation, square pixels, 3 adjacent slices, "
            "(HU + 600) / 1600",
        },
    )


def assign_devices(
    pool: ClientPool, profiles: Any, *, seed: int, image_size: int
) -> list[ClientPool]:
    """Deals ``pool``'s patients to simulated devices and images them with each device.

    Patients are shuffled (seeded) and dealt in proportion to each profile's
    ``num_patients``; each client's images then go through
    :func:`~pppml_jax.data.devices.acquire_images`.
    """
    profiles = resolve_profiles(profiles)
    patients = sorted({str(p) for p in pool.patient})
    rng = np.random.default_rng([seed, 7])
    order = [patients[i] for i in rng.permutation(len(patients))]
    weights = np.array([p.num_patients for p in profiles], dtype=np.float64)
    bounds = np.rint(np.cumsum(weights) / weights.sum() * len(order)).astype(int)
    pools, start = [], 0
    patient = np.asarray(pool.patient).astype(str)
    for index, (profile, stop) in enumerate(zip(profiles, bounds, strict=True)):
        members = set(order[start:stop])
        start = stop
        if not members:
            raise ValueError(
                f"{len(patients)} patients are too few for {len(profiles)} device profiles"
            )
        take = np.nonzero(np.isin(patient, list(members)))[0]
        arrays = {k: v[take] for k, v in pool.arrays.items()}
        arrays["image"] = acquire_images(
            arrays["image"], profile, np.random.default_rng([seed, index, 11])
        )
        pools.append(
            ClientPool(
                name=profile.display_name(None),
                profile=profile.to_dict(None, image_size),
                arrays=arrays,
                patient=pool.patient[take],
                position=pool.position[take],
            )
        )
    return pools


def _load_image_folder(options: dict[str, Any]) -> FederatedDataset:
    from pppml_jax.data.builders import image_folder

    _check_options(
        "image_folder",
        options,
        _builder_options(
            image_folder.ImageFolderConfig, "manual_dir", "data_dir", "rebuild", "profiles"
        ),
    )
    manual_dir = _manual_dir("image_folder", options)
    seed = int(options.get("seed", 0))
    split = _split_spec(options, {})
    profiles = options.pop("profiles", "quickstart")
    config, _, pools, metadata = _tfds_pools(image_folder, "ImageFolder", manual_dir, options)
    classes = list(metadata["classes"])
    if config.layout == "class":
        pools = assign_devices(pools[0], profiles, seed=seed, image_size=config.size)
    return federation_from_pools(
        "image_folder",
        "classification",
        pools,
        split,
        num_classes=len(classes),
        info={"source": f"image folder {manual_dir}", "classes": classes, "layout": config.layout},
    )


def _load_real_ct(options: dict[str, Any]) -> FederatedDataset:
    from pppml_jax.data.paths import data_root
    from pppml_jax.data.real_ct import prepare_real_ct

    _check_options(
        "real_ct",
        options,
        REAL_CT_OPTIONS,
    )
    root = Path(options.pop("root", None) or data_root() / "real_ct")
    download = bool(options.pop("download", True))
    sdist = options.pop("sdist", None)
    task = options.pop("task", "segmentation")
    if task not in ("segmentation", "classification"):
        raise ValueError(f"task={task!r} must be 'segmentation' or 'classification'")
    extra = sorted(set(options) & set(REAL_CT_CLASSIFICATION_OPTIONS))
    if task == "segmentation" and extra:
        raise ValueError(f"real_ct option(s) {extra} need task='classification'")
    if not (root / "manifest.csv").is_file():
        if not download and sdist is None:
            raise ValueError(
                f"no real CT at {root}; run `pppml data real-ct --out {root}` first "
                "(or pass download=True)"
            )
        prepare_real_ct(root, sdist=sdist)
    options.setdefault("size", 128)
    options.setdefault("data_dir", str(root / "tfds"))
    if task == "classification":
        return _real_ct_classification(root, options)
    for key, value in {"split": "slab", "slab_size": 2, "slab_gap": False}.items():
        options.setdefault(key, value)
    fed = _load_covid({**options, "manual_dir": str(root)}, name="real_ct")
    info = {
        **fed.info,
        "source": "PyRadiomics lung1 / lung2 chest CT with tumour label maps, from the PyPI "
        f"sdist of pyradiomics-bhklab 3.1.4 (prepared in {root})",
        "labels": "lung tumour (one finding per scan), not infection",
    }
    return dataclasses.replace(fed, info=info)


REAL_CT_CLASSIFICATION_OPTIONS = ("label", "patient_slab", "profiles")
REAL_CT_OPTIONS = ("root", "download", "sdist", "data_dir", "rebuild", "axis", "size", "stride")
REAL_CT_OPTIONS += ("task", *REAL_CT_CLASSIFICATION_OPTIONS)
REAL_CT_LABELS = ("cranial", "tumour")


def slice_labels(kind: str, position: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-slice class of one scan's slices: ``"cranial"`` (1 for the upper half of the
    slices by position, superior in RAS+) or ``"tumour"`` (1 where the mask marks tumour)."""
    if kind == "tumour":
        return mask.reshape(len(mask), -1).any(axis=1).astype(np.int32)
    rank = np.argsort(np.argsort(position, kind="stable"), kind="stable")
    return (rank >= len(position) / 2).astype(np.int32)


def _real_ct_classification(root: Path, options: dict[str, Any]) -> FederatedDataset:
    """The two real scans, sliced, as a 2-D classification federation of simulated devices.

    Each scan's slices are cut into pseudo-patients of ``patient_slab`` consecutive slices;
    the pseudo-patients of both scans are dealt to the device profiles
    (:func:`assign_devices`: every client sees its own simulated scanner) and each client is
    split by pseudo-patient. Adjacent slices are the channels, so a slice next to a slab
    boundary shares one neighbour with another pseudo-patient.
    """
    from pppml_jax.data.builders import covid_ct_seg

    kind = options.pop("label", "cranial")
    if kind not in REAL_CT_LABELS:
        raise ValueError(f"label={kind!r} is not one of {REAL_CT_LABELS}")
    slab = int(options.pop("patient_slab", 4))
    if slab < 1:
        raise ValueError(f"patient_slab={slab} must be >= 1")
    profiles = options.pop("profiles", "quickstart")
    seed = int(options.get("seed", 0))
    split = _split_spec(options, {})
    built = _tfds_pools(covid_ct_seg, "CovidCtSeg", root, options)
    images, labels, patients, positions = [], [], [], []
    for pool in built.pools:
        patient = np.asarray(pool.patient).astype(str)
        position = np.asarray(pool.position).astype(np.int64)
        for scan in sorted(set(patient)):
            take = np.nonzero(patient == scan)[0]
            take = take[np.argsort(position[take], kind="stable")]
            images.append(pool.arrays["image"][take])
            labels.append(slice_labels(kind, position[take], pool.arrays["mask"][take]))
            order = np.arange(len(take))
            patients.append(np.array([f"{scan}/slab{i // slab:03d}" for i in order], object))
            positions.append(order)
    merged = ClientPool(
        name="real_ct",
        profile={},
        arrays={"image": np.concatenate(images), "label": np.concatenate(labels)},
        patient=np.concatenate(patients),
        position=np.concatenate(positions),
    )
    pools = assign_devices(merged, profiles, seed=seed, image_size=built.config.size)
    return federation_from_pools(
        "real_ct",
        "classification",
        pools,
        split,
        info={
            "source": "PyRadiomics lung1 / lung2 chest CT from the PyPI sdist of "
            f"pyradiomics-bhklab 3.1.4 (prepared in {root}), sliced along "
            f"{built.config.axis}, simulated devices per client",
            "labels": {
                "cranial": "the slice lies in the upper half of its scan (RAS+ superior)",
                "tumour": "the slice's label map marks lung tumour",
            }[kind],
            "patient_slab": slab,
            "preprocessing": "RAS+ reorientation, square pixels, 3 adjacent slices, "
            "(HU + 600) / 1600, then each client's device (acquire_images)",
        },
    )


LOADERS: dict[str, Callable[[dict[str, Any]], FederatedDataset]] = {
    "synthetic_chest_ct": _load_synthetic,
    "rad_chestct": _load_rad,
    "covid_ct_seg": _load_covid,
    "image_folder": _load_image_folder,
    "real_ct": _load_real_ct,
}


def load_federation(name: str, **options: Any) -> FederatedDataset:
    """Loads the federation ``name`` with ``options`` (see the module docstring).

    Args:
      name: one of ``"synthetic_chest_ct"``, ``"rad_chestct"``, ``"covid_ct_seg"``,
        ``"image_folder"``, ``"real_ct"``.
      **options: the loader's options, e.g. straight from a YAML config.

    Returns:
      a :class:`~pppml_jax.data.types.FederatedDataset`.

    Raises:
      ValueError: unknown name or option, missing data directory, too few patients for the
        split, or a bad file (the message names the file).

    Example::

        fed = load_federation("synthetic_chest_ct", task="segmentation", profiles="quickstart")
        fed = load_federation("covid_ct_seg", manual_dir="/data/covid", axis="z", size=256)
    """
    if name not in LOADERS:
        raise ValueError(f"unknown federation {name!r}; use one of {sorted(LOADERS)}")
    return LOADERS[name](dict(options))
