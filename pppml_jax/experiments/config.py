"""Experiment configs: YAML in, one frozen, completely validated :class:`ExperimentConfig` out.

::

    config = load_config("configs/quickstart.yaml", ["training.rounds=3"])
    config.labels                       # ("local", "fedavg", "perfedavg", "pppml")
    config.federation_config("pppml")   # its FederationConfig (training, then overrides.pppml)
    config.to_dict()                    # plain data, as results.json records it

Everything is checked when the file is loaded, before any data is read: unknown keys in every
section (with the accepted ones), value types (a boolean is never an integer), ranges and
choices, algorithm names and options, secure backends and options, and every algorithm's
:class:`~pppml_jax.federation.config.FederationConfig`. Each refusal is a :class:`ConfigError`
naming the dotted key (``checkpoint.every``), the bad value and what is accepted.

``model.options`` are checked against the model class's field types and the ranges and
choices the model needs (:func:`~pppml_jax.experiments.config_options.check_model_options`);
``data.options`` against what ``load_federation`` accepts for that data set, without reading
any data (:func:`~pppml_jax.experiments.config_options.check_data_options`).

Size: about 480 lines, over the project's 400, because the section dataclasses and the
ExperimentConfig that cross-checks them (labels, overrides, seeds, tune) are one schema read
together; the parts that stand alone live in config_schema, config_yaml, config_secure,
config_attack, config_tune, config_run and config_options.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pppml_jax.experiments.config_options import check_data_options, check_model_options
from pppml_jax.experiments.config_run import (
    DivergenceConfig,
    TrackingConfig,
    parse_seeds,
)
from pppml_jax.experiments.config_schema import (
    ConfigError,
    check_value,
    join,
    option,
    parse,
    to_dict,
)
from pppml_jax.experiments.config_secure import SecureConfig, parse_secure
from pppml_jax.experiments.config_tune import TuneConfig, check_tune, parse_tune
from pppml_jax.experiments.config_yaml import apply_overrides, parse_override, read_config
from pppml_jax.experiments.tasks import EMPTY_SCORES
from pppml_jax.federation.config import FederationConfig

__all__ = [
    "AlgorithmSpec",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "ModelConfig",
    "ReportConfig",
    "apply_overrides",
    "federation_config",
    "load_config",
    "parse_override",
    "read_config",
    "validate",
]

DEFAULT_ALGORITHMS = ("local", "fedavg", "perfedavg")
LABEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
FEDERATION_FIELDS = tuple(
    f.name for f in dataclasses.fields(FederationConfig) if f.name not in ("algorithm", "seed")
)


def algorithm_registry() -> tuple[tuple[str, ...], Any]:
    """``(BUILTINS, make_algorithm)`` of :mod:`pppml_jax.algorithms`.

    Falls back to the engine's fixed names (and no algorithm options) where the algorithm
    registry is not available.
    """
    try:
        from pppml_jax.algorithms import BUILTINS, make_algorithm
    except ImportError:
        from pppml_jax.federation.config import ALGORITHMS

        return tuple(ALGORITHMS), None
    return tuple(BUILTINS), make_algorithm


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """``data``: the federation, ``pppml_jax.data.load_federation(name, **options)``."""

    name: str = option(help="a loader of pppml_jax.data.LOADERS")
    options: Mapping[str, Any] = option({}, help="the loader's options")

    def __post_init__(self):
        from pppml_jax.data.loading import LOADERS

        if self.name not in LOADERS:
            raise ConfigError(
                f"data.name={self.name!r} is not a data set; use one of {', '.join(LOADERS)}"
            )
        check_data_options(self.name, self.options)


def model_names() -> tuple[str, ...]:
    """The model constructors of :mod:`pppml_jax.models` a config may name."""
    from pppml_jax import models

    return tuple(sorted(n for n in models.__all__ if callable(getattr(models, n))))


def model_options(name: str) -> tuple[str, ...]:
    """The constructor options (Flax module attributes) of model ``name``."""
    from pppml_jax import models

    target = getattr(models, name)
    target = getattr(target, "func", target)  # functools.partial presets
    return tuple(f.name for f in dataclasses.fields(target) if f.name not in ("parent", "name"))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """``model``: a Flax module of :mod:`pppml_jax.models` and its constructor options."""

    name: str = option(help="a model of pppml_jax.models")
    options: Mapping[str, Any] = option({}, help="its constructor options")

    def __post_init__(self):
        names = model_names()
        if self.name not in names:
            raise ConfigError(
                f"model.name={self.name!r} is not in pppml_jax.models; use one of "
                f"{', '.join(names)}"
            )
        accepted = model_options(self.name)
        unknown = [k for k in self.options if k not in accepted]
        if unknown:
            raise ConfigError(
                f"unknown key 'model.options.{unknown[0]}'; {self.name} accepts "
                f"{', '.join(accepted)}"
            )
        check_model_options(self.name, self.options)


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
    """One entry of ``algorithms``: ``fedavg`` or ``{name: ditto, lam: 0.1, label: ditto-a}``.

    Attributes:
      name: a built-in algorithm (``pppml_jax.algorithms.BUILTINS``).
      options: the algorithm's options (``make_algorithm({"name": name, **options})``).
      label: the key of its results, outputs and ``overrides`` (default: ``name``).
    """

    name: str
    options: Mapping[str, Any]
    label: str

    def algorithm(self) -> Any:
        """What ``FederationConfig(algorithm=...)`` takes: the name, or the built value."""
        if not self.options:
            return self.name
        _, make_algorithm = algorithm_registry()
        return make_algorithm({"name": self.name, **self.options})

    def to_config(self) -> str | dict[str, Any]:
        """The entry as a config file writes it."""
        if not self.options and self.label == self.name:
            return self.name
        label = {} if self.label == self.name else {"label": self.label}
        return {"name": self.name, **to_dict(self.options), **label}


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """``evaluation``: how the test metric is computed."""

    empty_masks: str = option(
        "one", choices=tuple(EMPTY_SCORES), help="Dice of an image whose masks are both empty"
    )


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """``report``: what summary.md and the figures show."""

    example_images: int = option(1, min=0, help="test images per client in examples.png")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """``checkpoint``: orbax checkpoints of the federation state (for ``--resume``)."""

    every: int = option(1, min=0, help="checkpoint every k rounds (and after the last); 0: never")
    keep: int = option(3, min=2, help="latest checkpoints kept (>= 2, so a corrupt one falls back)")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A whole ``pppml run`` config, validated (:func:`validate`).

    Attributes:
      name: a short name of the run (titles, the default output directory).
      seed: the first seed of the run (``seeds[0]``).
      data: the federation's data.
      model: the model.
      training: FederationConfig fields shared by every algorithm (only those the file sets;
        ``secure`` as a :class:`SecureConfig`).
      algorithms: the algorithms run, in order; their labels are unique.
      overrides: per algorithm label, FederationConfig fields replacing ``training``'s.
      evaluation, report, checkpoint: the other sections.
      seeds: every seed run (data split and generation, initialisation, batches, sampling);
        ``seeds: 3`` in a file means ``(seed, seed + 1, seed + 2)``.
      divergence: when a run counts as diverged (:class:`DivergenceConfig`).
      tracking: TensorBoard / MLflow (:class:`TrackingConfig`).
      tune: the validation search per algorithm (:class:`TuneConfig`), or None.
    """

    name: str
    seed: int
    data: DataConfig
    model: ModelConfig
    training: Mapping[str, Any]
    algorithms: tuple[AlgorithmSpec, ...]
    overrides: Mapping[str, Mapping[str, Any]]
    evaluation: EvaluationConfig
    report: ReportConfig
    checkpoint: CheckpointConfig
    seeds: tuple[int, ...] = (0,)
    divergence: DivergenceConfig = dataclasses.field(default_factory=DivergenceConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)
    tune: TuneConfig | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        """The algorithms' labels, in run order (the keys of results.json's ``runs``)."""
        return tuple(a.label for a in self.algorithms)

    def algorithm(self, label: str) -> AlgorithmSpec:
        """The algorithm entry labelled ``label``."""
        for spec in self.algorithms:
            if spec.label == label:
                return spec
        raise KeyError(f"no algorithm labelled {label!r}; labels: {', '.join(self.labels)}")

    def federation_fields(self, label: str) -> dict[str, Any]:
        """``training`` then ``overrides.<label>``, as FederationConfig keyword arguments."""
        fields = {**self.training, **self.overrides.get(label, {})}
        if isinstance(fields.get("secure"), SecureConfig):
            fields["secure"] = fields["secure"].to_dict()
        return fields

    def federation_config(self, label: str, seed: int | None = None) -> FederationConfig:
        """The :class:`FederationConfig` of the algorithm labelled ``label`` (for ``seed``,
        default the first seed).

        Raises:
          ConfigError: a field is out of range for this algorithm (named by its dotted key).
        """
        spec = self.algorithm(label)
        fields = _drop_unused_shared(
            self.federation_fields(label), spec, self.overrides.get(label, {})
        )
        try:
            seed = self.seed if seed is None else seed
            return FederationConfig(algorithm=spec.algorithm(), seed=seed, **fields)
        except (TypeError, ValueError) as err:
            match = re.match(r"(\w+)=", str(err))
            field = match.group(1) if match else None
            if field in self.overrides.get(label, {}):
                raise ConfigError(f"overrides.{label}.{err}") from err
            if field in self.training:
                raise ConfigError(f"training.{err} (algorithm {label})") from err
            raise ConfigError(f"algorithm {label}: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (what a config file holding it would say)."""
        out = {f.name: to_dict(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["algorithms"] = [spec.to_config() for spec in self.algorithms]
        if self.tune is None:
            del out["tune"]
        return out

    def with_seeds(self, seeds: int | Sequence[int]) -> ExperimentConfig:
        """This config run on ``seeds``: a count from :attr:`seed`, or a list.

        Raises:
          ConfigError: a bad count or list (as for ``seeds`` in a file).
        """
        count = isinstance(seeds, int) and not isinstance(seeds, bool)
        parsed = parse_seeds(seeds if count else list(seeds), self.seed if count else None)
        return dataclasses.replace(self, seed=parsed[0], seeds=parsed)


def _federation_hints() -> dict[str, Any]:
    return typing.get_type_hints(FederationConfig)


def parse_training(value: Any, key: str) -> dict[str, Any]:
    """A mapping of FederationConfig fields (``training`` or ``overrides.<label>``), typed.

    Raises:
      ConfigError: not a mapping, an unknown field (with the accepted ones), a wrong type.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}={value!r} must be a mapping of FederationConfig fields")
    hints = _federation_hints()
    out: dict[str, Any] = {}
    for name, item in value.items():
        if name not in FEDERATION_FIELDS:
            where = "top-level 'seed'" if name == "seed" else "the 'algorithms' list"
            hint = f" (set it in {where})" if name in ("seed", "algorithm") else ""
            raise ConfigError(
                f"unknown key {join(key, name)!r}{hint}; FederationConfig fields are "
                f"{', '.join(FEDERATION_FIELDS)}"
            )
        if name == "secure":
            out[name] = parse_secure(item, join(key, name))
        elif name == "local_optimizer":
            out[name] = check_value(str, item, join(key, name))
        else:
            out[name] = check_value(hints[name], item, join(key, name))
    return out


def parse_algorithms(value: Any) -> tuple[AlgorithmSpec, ...]:
    """The ``algorithms`` list: names or ``{name, label, **options}`` mappings, labels unique.

    Raises:
      ConfigError: an unknown algorithm or option, a bad or repeated label.
    """
    builtins, make_algorithm = algorithm_registry()
    if value is None:
        value = list(DEFAULT_ALGORITHMS)
    if isinstance(value, (str, Mapping)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"algorithms={value!r} must be a non-empty list of algorithms")
    specs: list[AlgorithmSpec] = []
    for i, item in enumerate(value):
        key = join("algorithms", i)
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ConfigError(
                f"{key}={item!r} must be an algorithm name or a mapping {{name: ..., options}}"
            )
        options = {k: v for k, v in item.items() if k not in ("name", "label")}
        name, label = item["name"], item.get("label", item["name"])
        if name not in builtins:
            raise ConfigError(
                f"{key}: algorithm {name!r} is unknown; use one of {', '.join(builtins)}"
            )
        if not isinstance(label, str) or not LABEL.match(label):
            raise ConfigError(
                f"{join(key, 'label')}={label!r} must be a name of letters, digits, '_', '.', '-'"
            )
        if label in [s.label for s in specs]:
            raise ConfigError(f"{key}: label {label!r} is used twice; give one a distinct 'label'")
        if options:
            if make_algorithm is None:
                raise ConfigError(f"{key}: algorithm options {sorted(options)} are not supported")
            try:
                make_algorithm({"name": name, **options})
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{key} ({name}): {err}") from err
        specs.append(AlgorithmSpec(name=name, options=dict(options), label=label))
    return tuple(specs)


def parse_overrides(value: Any, algorithms: Sequence[AlgorithmSpec]) -> dict[str, dict]:
    """``overrides``: per algorithm label (of this config, or a built-in name), fields."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"overrides={value!r} must be a mapping {{label: {{fields}}}}")
    accepted = list(dict.fromkeys([s.label for s in algorithms] + list(algorithm_registry()[0])))
    out = {}
    for label, fields in value.items():
        if label not in accepted:
            raise ConfigError(
                f"overrides.{label}: not an algorithm label of this config; use one of "
                f"{', '.join(accepted)}"
            )
        out[label] = parse_training(fields, f"overrides.{label}")
    return out


TOP_LEVEL_KEYS = tuple(f.name for f in dataclasses.fields(ExperimentConfig))


def validate(config: Mapping[str, Any]) -> ExperimentConfig:
    """The typed, completely validated :class:`ExperimentConfig` of a config mapping.

    Every algorithm's FederationConfig is built once here, so that a bad value fails now,
    not after an earlier algorithm has trained.

    Raises:
      ConfigError: naming the first unknown key or bad value by its dotted key.
    """
    if not isinstance(config, Mapping):
        raise ConfigError("the config file must hold a mapping at top level")
    unknown = [k for k in config if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise ConfigError(
            f"unknown top-level key {unknown[0]!r}; accepted keys: {', '.join(TOP_LEVEL_KEYS)}"
        )
    for section in ("data", "model"):
        if not isinstance(config.get(section), Mapping) or "name" not in config[section]:
            raise ConfigError(f"{section} must be a mapping with a 'name' (and optional 'options')")
    name = check_value(str, config.get("name", "experiment"), "name")
    seed = config.get("seed")
    if seed is not None:
        seed = check_value(int, seed, "seed")
        if seed < 0:
            raise ConfigError(f"seed={seed!r} must be >= 0")
    seeds = parse_seeds(config.get("seeds"), seed)
    algorithms = parse_algorithms(config.get("algorithms"))
    out = ExperimentConfig(
        name=name,
        seed=seeds[0],
        seeds=seeds,
        data=parse(DataConfig, config["data"], "data"),
        model=parse(ModelConfig, config["model"], "model"),
        training=parse_training(config.get("training"), "training"),
        algorithms=algorithms,
        overrides=parse_overrides(config.get("overrides"), algorithms),
        evaluation=parse(EvaluationConfig, config.get("evaluation"), "evaluation"),
        report=parse(ReportConfig, config.get("report"), "report"),
        checkpoint=parse(CheckpointConfig, config.get("checkpoint"), "checkpoint"),
        divergence=parse(DivergenceConfig, config.get("divergence"), "divergence"),
        tracking=parse(TrackingConfig, config.get("tracking"), "tracking"),
        tune=parse_tune(config.get("tune"), tuple(a.label for a in algorithms)),
    )
    for label in out.labels:
        out.federation_config(label)
    check_tune(out)
    return out


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Reads a YAML config (:func:`read_config`), applies ``--set`` overrides, validates it.

    Raises:
      ConfigError: if the file is missing, not YAML, or invalid.
    """
    return validate(apply_overrides(read_config(path), overrides))


def _drop_unused_shared(fields: dict, spec: Any, own: Mapping[str, Any]) -> dict:
    """``fields`` without shared ``training`` options this algorithm has no use for.

    One ``training`` block serves every algorithm, so Per-FedAvg's ``beta``, ``variant`` and
    ``delta`` there are not a mistake for FedAvg; set in ``overrides.<label>`` they still are
    (and the engine warns).
    """
    from pppml_jax.algorithms import make_algorithm

    try:
        algorithm = make_algorithm(spec.algorithm())
    except ValueError:
        return fields  # refused, with its message, when the FederationConfig is built
    used = {
        "beta": "beta" in algorithm.hparams,
        "delta": "delta" in algorithm.hparams,
        "variant": "variant" in algorithm.options,
    }
    return {k: v for k, v in fields.items() if used.get(k, True) or k in own}


def federation_config(config: ExperimentConfig, label: str) -> FederationConfig:
    """``config.federation_config(label)``."""
    return config.federation_config(label)
