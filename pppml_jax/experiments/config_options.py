"""Value checks of ``model.options`` and ``data.options``, run when a config is loaded.

:func:`check_model_options` checks each ``model.options`` value against the type of the model
class's field (a boolean is never an integer), then against the ranges and choices the model
needs (``norm``, ``activation``, widths >= 1, momentum and dropout in [0, 1]) and LeNet's
``features`` / ``strides`` lengths. :func:`check_data_options` checks ``data.options`` against
what :func:`pppml_jax.data.load_federation` accepts for that data set: option names and types
(split options from :class:`~pppml_jax.data.splits.SplitSpec`, builder options from the builder
configs), choices, the required ``manual_dir``, device ``profiles``, the synthetic image size
and the split's fractions and folds.

Why at load time: the models check these values only when called and the loaders only when
data is read, which is after ``fingerprint.json`` is written and possibly after an earlier
algorithm trained (``levels=true`` even trained a 1-level U-Net silently). Here no model is
built and no data is read. Where the data package has a check that reads no data
(:class:`SplitSpec`, :func:`~pppml_jax.data.devices.resolve_profiles`,
:meth:`DeviceProfile.from_dict`, :func:`~pppml_jax.data.synthetic.resolve_options`) it is
called, and its message is reworded to name the dotted key. Each refusal is a
:class:`ConfigError` naming ``model.options.<key>`` or ``data.options.<key>``, the value and
what is accepted.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pppml_jax.experiments.config_schema import (
    ConfigError,
    check_range,
    check_value,
    join,
    option,
)

__all__ = ["check_data_options", "check_model_options", "field_hints"]


def field_hints(cls: type) -> dict[str, Any]:
    """Field name -> type hint of the dataclass ``cls``, each annotation resolved on its own in
    its module (a field whose annotation does not resolve takes ``Any``), callables left out
    (a config file cannot hold a function)."""
    namespace = vars(sys.modules[cls.__module__])
    out = {}
    for f in dataclasses.fields(cls):
        hint = f.type
        if isinstance(hint, str):
            try:
                hint = eval(hint, dict(namespace))  # the class's own annotation, in its module
            except Exception:
                hint = Any
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(hint) if typing.get_origin(a) is not Callable]
            hint = Any
            for i, arg in enumerate(args):
                hint = arg if i == 0 else hint | arg
        out[f.name] = hint
    return out


def _limits() -> dict[str, dataclasses.Field]:
    """Ranges and choices of model options, by name (what the models check when called)."""
    from pppml_jax.models import ACTIVATIONS
    from pppml_jax.models._norm import NORMS

    positive = ("num_classes", "features", "strides", "growth_rate", "bn_size")
    non_negative = ("levels", "hidden", "head_hidden", "block_config", "init_range")
    return {
        **{k: option(min=1) for k in (*positive, "init_features")},
        **{k: option(min=0) for k in non_negative},  # UNet2D(levels=0) builds and runs
        **{k: option(min=0.0, max=1.0) for k in ("bn_momentum", "head_dropout")},
        "norm": option(choices=NORMS),
        "activation": option(choices=tuple(ACTIVATIONS)),
    }


def check_model_options(name: str, options: Mapping[str, Any]) -> None:
    """Refuses option values model ``name`` would take wrongly or refuse only when called.

    Each value is checked against the type of the model's field (a boolean is never an
    integer), then against the range or choices the model needs (``norm``, ``activation``,
    widths >= 1); LeNet's ``features`` and ``strides`` must have one length.

    Raises:
      ConfigError: naming ``model.options.<key>``, the value and what is accepted.
    """
    from pppml_jax import models

    target = getattr(models, name)
    cls = getattr(target, "func", target)
    hints, limits = field_hints(cls), _limits()
    for key, value in options.items():
        where = join("model.options", key)
        checked = check_value(hints.get(key, Any), value, where)
        if key in limits:
            check_range(limits[key], checked, where)
    merged = {**getattr(target, "keywords", {}), **options}
    if "strides" in hints and "features" in hints and {"strides", "features"} & set(options):
        features = tuple(merged.get("features", getattr(cls, "features", ())))
        strides = tuple(merged.get("strides", getattr(cls, "strides", ())))
        if len(features) != len(strides):
            key = "strides" if "strides" in options else "features"
            other = "features" if key == "strides" else "strides"
            mine, theirs = (strides, features) if key == "strides" else (features, strides)
            raise ConfigError(
                f"model.options.{key}={list(mine)} has {len(mine)} entries but {other}="
                f"{list(theirs)} has {len(theirs)}; {name} needs one stride per convolution"
            )


def _data_schema(name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(option types, split defaults, limits)`` of data loader ``name``, as
    :func:`pppml_jax.data.load_federation` reads its options (module ``data.loading``)."""
    from pppml_jax.data import loading
    from pppml_jax.data.splits import METHODS, SplitSpec
    from pppml_jax.data.synthetic import DEFAULTS

    split = field_hints(SplitSpec)
    types_: dict[str, Any] = {
        k: split["method" if k == "split" else k] for k in loading.SPLIT_OPTIONS
    }
    types_.update(data_dir=str | None, rebuild=bool)  # None: the default data directory
    limits = {"split": option(choices=METHODS), "task": option(choices=tuple(DEFAULTS))}
    defaults: dict[str, Any] = {}
    if name == "synthetic_chest_ct":
        types_.update(task=str, profiles=Any, via_tfds=bool)
        types_.update({k: int | None for k in ("image_size", "depth", "slices_per_patient")})
        return types_, defaults, limits
    from pppml_jax.data.builders import covid_ct_seg, image_folder, rad_chestct
    from pppml_jax.data.builders._common import config_fields
    from pppml_jax.data.slicing import AXES

    builder = {
        "rad_chestct": rad_chestct.RadChestCtConfig,
        "covid_ct_seg": covid_ct_seg.CovidCtSegConfig,
        "image_folder": image_folder.ImageFolderConfig,
        "real_ct": covid_ct_seg.CovidCtSegConfig,
    }[name]
    hints = field_hints(builder)
    types_.update({k: hints[k] for k in config_fields(builder) - {"source"}})
    types_["manual_dir"] = str
    limits.update(
        axis=option(choices=AXES),
        layout=option(choices=image_folder.LAYOUTS),
        nifti_intensity=option(choices=("minmax", "hu")),
        label=option(choices=loading.REAL_CT_LABELS),
        size=option(min=1),
        stride=option(min=1),
        patient_slab=option(min=1),
    )
    if name == "rad_chestct":
        types_["thickness"] = str | list[int] | None
    if name == "image_folder":
        types_["profiles"] = Any
    if name == "covid_ct_seg":
        defaults = {"num_folds": 5, "test_fold": 0}
    if name == "real_ct":
        accepted = (*loading.REAL_CT_OPTIONS, *loading.SPLIT_OPTIONS)
        types_ = {k: v for k, v in types_.items() if k in accepted}
        types_.update(root=str | None, download=bool, sdist=str | None, task=str, label=str)
        types_.update(patient_slab=int, profiles=Any)
    return types_, defaults, limits


def check_data_options(name: str, options: Mapping[str, Any]) -> None:
    """Refuses the options of data set ``name`` that loading it would refuse, without reading
    any data: unknown options (with the accepted ones), wrong types (a boolean is never an
    integer), choices (``task``, ``split``, ``axis``, ...), device ``profiles`` (a preset name
    or profile mappings, :func:`~pppml_jax.data.devices.resolve_profiles`), the synthetic
    image size and the split's fractions and folds (:class:`~pppml_jax.data.splits.SplitSpec`).
    Whether ``manual_dir`` or ``root`` holds data is left to loading.

    Raises:
      ConfigError: naming ``data.options.<key>``, the value and what is accepted.
    """
    from pppml_jax.data import loading
    from pppml_jax.data.splits import SplitSpec

    types_, defaults, limits = _data_schema(name)
    for key, value in options.items():
        where = join("data.options", key)
        if key not in types_:
            raise ConfigError(
                f"unknown key {where!r}; data set {name!r} accepts {', '.join(sorted(types_))}"
            )
        checked = check_value(types_[key], value, where)
        if key in limits:
            check_range(limits[key], checked, where)
        if key == "profiles":
            _check_profiles(value)
    if name in ("rad_chestct", "covid_ct_seg", "image_folder") and "manual_dir" not in options:
        raise ConfigError(f"data.options.manual_dir is required for data set {name!r}")
    thickness = options.get("thickness")
    if isinstance(thickness, str) and thickness != "paper":
        raise ConfigError(f"data.options.thickness={thickness!r} must be 'paper', null or a list")
    task = options.get("task", "segmentation")
    if name == "real_ct" and task == "segmentation":
        extra = sorted(set(options) & set(loading.REAL_CT_CLASSIFICATION_OPTIONS))
        if extra:
            raise ConfigError(f"data.options.{extra[0]} needs data.options.task=classification")
        defaults = {"split": "slab", "slab_size": 2, "slab_gap": False}
    if name == "synthetic_chest_ct":
        _check_synthetic_sizes(task, options)
    split = {**defaults, **{k: options[k] for k in loading.SPLIT_OPTIONS if k in options}}
    try:
        SplitSpec(method=split.pop("split", "patient"), **split)
    except ValueError as err:  # SplitSpec names the option first: "val_fraction=2 must be ..."
        first = re.match(r"(\w+)=", str(err))
        raise ConfigError(
            f"data.options.{err}" if first and first.group(1) in types_ else f"data.options: {err}"
        ) from err


def _check_synthetic_sizes(task: str, options: Mapping[str, Any]) -> None:
    """The synthetic federation's image size, depth and slices per patient, the task's
    defaults filled in (``synthetic_pools`` checks these only when it generates data)."""
    from pppml_jax.data.synthetic import resolve_options

    size, depth, per_patient = resolve_options(
        task, *(options.get(k) for k in ("image_size", "depth", "slices_per_patient"))
    )
    if size < 16 or size % 8:
        raise ConfigError(f"data.options.image_size={size} must be a multiple of 8 and >= 16")
    if depth < 1:
        raise ConfigError(f"data.options.depth={depth} must be >= 1 (null: the task's default)")
    if per_patient < 1:
        raise ConfigError(f"data.options.slices_per_patient={per_patient} must be >= 1")


def _check_profiles(value: Any) -> None:
    """A preset name, or a list of profile mappings with known, typed fields."""
    from pppml_jax.data.devices import DeviceProfile, resolve_profiles

    key = "data.options.profiles"
    if not isinstance(value, (str, list, tuple)):
        raise ConfigError(f"{key}={value!r} must be a preset name or a list of device profiles")
    hints = field_hints(DeviceProfile)
    for i, item in enumerate(value if not isinstance(value, str) else ()):
        if isinstance(item, Mapping):
            for field, v in item.items():
                if field not in hints:
                    raise ConfigError(
                        f"unknown key {join(join(key, i), field)!r}; a device profile has "
                        f"{', '.join(hints)}"
                    )
                check_value(hints[field], v, join(join(key, i), field))
            try:
                DeviceProfile.from_dict(item)
            except ValueError as err:  # "num_patients=0 must be >= 1"
                raise ConfigError(f"{join(key, i)}.{err}") from err
    try:
        resolve_profiles(value)
    except ValueError as err:  # "profiles='x' is not a preset", "num_patients=0 must be >= 1"
        text = str(err)
        raise ConfigError(
            f"data.options.{text}" if text.startswith("profiles") else f"{key}: {text}"
        ) from err
