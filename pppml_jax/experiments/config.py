"""Experiment configuration files: YAML in, validated nested dicts out, ``--set`` overrides."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pppml_jax.experiments.tasks import EMPTY_SCORES
from pppml_jax.federation.config import ALGORITHMS, FederationConfig

TOP_LEVEL_KEYS = {
    "name": "a short name for the run (used in titles)",
    "seed": "the one seed of the run (data generation, initialisation, training)",
    "data": "{name, options}: the federation's data (pppml_jax.data.load_federation)",
    "model": "{name, options}: a model of pppml_jax.models",
    "training": "FederationConfig fields shared by every algorithm",
    "algorithms": "list of algorithms to run: local, fedavg, perfedavg, pppml",
    "overrides": "{algorithm: {FederationConfig fields}}: per-algorithm changes",
    "evaluation": "{empty_masks: one | exclude}: how Dice counts images with no lesion",
    "report": "{example_images, ...}: what the summary shows",
    "checkpoint": "{every}: checkpoint the federation every k rounds (for --resume)",
}
FEDERATION_FIELDS = {f.name for f in dataclasses.fields(FederationConfig)} - {"algorithm", "seed"}


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, also reading ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"training.rounds=5"`` -> ``(["training", "rounds"], 5)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted KEY")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"--set {text!r}: the key is empty")
    try:
        value = _yaml(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({err})") from err
    return path, value


def apply_overrides(config: dict, overrides: Sequence[str]) -> dict:
    """Returns a copy of ``config`` with every ``KEY=VALUE`` (dotted key) applied in order."""
    config = copy.deepcopy(config)
    for text in overrides:
        path, value = parse_override(text)
        node = config
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a mapping in the config")
            node = child
        node[path[-1]] = value
    return config


def validate(config: Mapping[str, Any]) -> dict:
    """Checks keys and types; returns the config with defaults filled in.

    Raises:
      ConfigError: naming the first unknown key or bad value.
    """
    if not isinstance(config, Mapping):
        raise ConfigError("the config file must hold a mapping at top level")
    unknown = sorted(set(config) - set(TOP_LEVEL_KEYS))
    if unknown:
        known = ", ".join(sorted(TOP_LEVEL_KEYS))
        raise ConfigError(f"unknown top-level key(s) {unknown}; known keys: {known}")
    out = copy.deepcopy(dict(config))
    out.setdefault("name", "experiment")
    out.setdefault("seed", 0)
    if not isinstance(out["seed"], int):
        raise ConfigError(f"seed={out['seed']!r} must be an integer")
    for section in ("data", "model"):
        value = out.get(section)
        if not isinstance(value, Mapping) or "name" not in value:
            raise ConfigError(f"{section} must be a mapping with a 'name' (and optional 'options')")
        value = dict(value)
        value.setdefault("options", {})
        if not isinstance(value["options"], Mapping):
            raise ConfigError(f"{section}.options must be a mapping")
        extra = sorted(set(value) - {"name", "options"})
        if extra:
            raise ConfigError(f"{section} has unknown key(s) {extra}; use name and options")
        out[section] = value
    training = dict(out.get("training") or {})
    _check_federation_fields("training", training)
    out["training"] = training
    algorithms = out.get("algorithms") or ["local", "fedavg", "perfedavg"]
    if isinstance(algorithms, str):
        algorithms = [algorithms]
    bad = [a for a in algorithms if a not in ALGORITHMS]
    if bad:
        raise ConfigError(f"algorithms {bad} are unknown; use any of {', '.join(ALGORITHMS)}")
    out["algorithms"] = list(algorithms)
    overrides = dict(out.get("overrides") or {})
    for algorithm, fields in overrides.items():
        if algorithm not in ALGORITHMS:
            raise ConfigError(f"overrides.{algorithm}: not an algorithm ({', '.join(ALGORITHMS)})")
        _check_federation_fields(f"overrides.{algorithm}", dict(fields or {}))
    out["overrides"] = {k: dict(v or {}) for k, v in overrides.items()}
    out["report"] = dict(out.get("report") or {})
    out["evaluation"] = dict(out.get("evaluation") or {})
    empty = out["evaluation"].setdefault("empty_masks", "one")
    if empty not in EMPTY_SCORES:
        choices = " or ".join(repr(k) for k in EMPTY_SCORES)
        raise ConfigError(f"evaluation.empty_masks={empty!r} must be {choices}")
    out["checkpoint"] = dict(out.get("checkpoint") or {})
    return out


def _check_federation_fields(where: str, fields: Mapping[str, Any]) -> None:
    unknown = sorted(set(fields) - FEDERATION_FIELDS)
    if unknown:
        raise ConfigError(
            f"{where} has unknown field(s) {unknown}; FederationConfig fields are "
            f"{', '.join(sorted(FEDERATION_FIELDS))}"
        )


def read_config(path: str | Path) -> dict:
    """The mapping in a YAML config file (``1e-3`` read as a float), not yet validated.

    Raises:
      ConfigError: if the file is missing, not YAML, or not a mapping at top level.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = _yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config file must hold a mapping at top level")
    return raw


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> dict:
    """Reads a YAML config (:func:`read_config`), applies ``--set`` overrides, validates it.

    Raises:
      ConfigError: if the file is missing, not YAML, or invalid.
    """
    return validate(apply_overrides(read_config(path), overrides))


def federation_config(config: Mapping[str, Any], algorithm: str) -> FederationConfig:
    """The :class:`FederationConfig` of one algorithm: training fields, then its overrides."""
    fields = {**config["training"], **config["overrides"].get(algorithm, {})}
    try:
        return FederationConfig(algorithm=algorithm, seed=config["seed"], **fields)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"algorithm {algorithm}: {err}") from err
