"""The ``tune`` section: a search over hyper-parameters per algorithm, scored on validation.

::

    tune:
      method: grid            # grid | random
      budget: 4               # trials per algorithm: the same for every algorithm
      rounds: 10              # rounds per trial (default training.rounds)
      metric: personalized    # the validation metric maximised: personalized | global
      seed: 0                 # random search's draws (independent of the run's seeds)
      space:                  # every algorithm label of the config, each a mapping
        fedavg:    {lr: [0.003, 0.01, 0.03, 0.1]}
        perfedavg: {alpha: [0.01, 0.03], beta: [0.003, 0.01]}
        fedprox:   {lr: [0.01, 0.03], mu: [0.001, 0.01]}
        local:     {lr: {low: 0.001, high: 0.1, log: true}}   # ranges: random search only

A parameter is a FederationConfig field (``lr``, ``alpha``, ``beta``, ``server_lr``, ...) or
an option of the algorithm (``mu``, ``lam``, ...). The protocol (FLamby's): every algorithm
gets the same number of trials and the same local updates per round, so ``local_steps``,
``batch_size``, ``rounds``, ``clients_per_round``, ``personalize_steps`` and ``eval_every``
cannot be searched, and with ``tune`` no ``overrides`` may change ``local_steps`` or
``batch_size``. A grid must have exactly ``budget`` points.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from pppml_jax.experiments.config_schema import ConfigError, check_value, join, option, parse

if TYPE_CHECKING:
    from pppml_jax.experiments.config import ExperimentConfig

FIXED = ("rounds", "local_steps", "batch_size", "clients_per_round", "personalize_steps")
FIXED += ("eval_every", "secure", "execution", "seed")
"""FederationConfig fields a search may not change (equal budget and local updates)."""
SAME_FOR_ALL = ("local_steps", "batch_size")
"""Fields ``overrides`` may not change per algorithm when tuning."""


@dataclasses.dataclass(frozen=True)
class Range:
    """A continuous range ``[low, high]`` (log-uniform when ``log``), for random search."""

    low: float = option(help="lowest value")
    high: float = option(help="highest value")
    log: bool = option(False, help="draw log-uniformly (low > 0)")

    def __post_init__(self):
        if not self.low < self.high:
            raise ConfigError(f"low={self.low!r} must be below high={self.high!r}")
        if self.log and self.low <= 0:
            raise ConfigError(f"log: true needs low > 0 (low={self.low!r})")

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log}


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """``tune``: see the module docstring; ``space`` maps label -> parameter -> values
    (a tuple of choices or a :class:`Range`)."""

    method: str = option("grid", choices=("grid", "random"), help="grid or random search")
    budget: int = option(4, min=1, help="trials per algorithm, the same for every algorithm")
    rounds: int | None = option(None, min=1, help="rounds per trial (default training.rounds)")
    metric: str = option("personalized", choices=("personalized", "global"))
    seed: int = option(0, min=0, help="the random search's draws")
    space: Mapping[str, Mapping[str, Any]] = option({}, help="label -> parameter -> values")

    def to_dict(self) -> dict[str, Any]:
        space = {
            label: {p: v.to_dict() if isinstance(v, Range) else list(v) for p, v in params.items()}
            for label, params in self.space.items()
        }
        fields = ("method", "budget", "rounds", "metric", "seed")
        return {**{f: getattr(self, f) for f in fields}, "space": space}

    def trials(self, label: str) -> list[dict[str, Any]]:
        """The ``budget`` parameter settings tried for ``label``, in order (deterministic)."""
        params = self.space.get(label, {})
        if not params:
            return []
        if self.method == "grid":
            names = list(params)
            return [dict(zip(names, p, strict=True)) for p in itertools.product(*params.values())]
        rng = np.random.default_rng([self.seed, zlib.crc32(label.encode())])
        return [{p: _draw(v, rng) for p, v in params.items()} for _ in range(self.budget)]


def _draw(values: Any, rng: np.random.Generator) -> Any:
    if isinstance(values, Range):
        if values.log:
            return float(math.exp(rng.uniform(math.log(values.low), math.log(values.high))))
        return float(rng.uniform(values.low, values.high))
    return values[int(rng.integers(len(values)))]


def _parse_values(value: Any, key: str, method: str) -> tuple[Any, ...] | Range:
    if isinstance(value, Mapping):
        if method == "grid":
            raise ConfigError(f"{key}: a range {dict(value)} needs method: random; a grid lists")
        try:
            return parse(Range, value, key)
        except ConfigError as err:
            raise ConfigError(f"{key}: {err}") from err
    values = check_value(tuple, value, key)
    if not values:
        raise ConfigError(f"{key}=[] must list at least one value")
    return values


def parse_tune(value: Any, labels: tuple[str, ...]) -> TuneConfig | None:
    """The ``tune`` section (None when absent): keys, types and the budget rule.

    Raises:
      ConfigError: an unknown key, a label of ``space`` that is not an algorithm of the config
        or an algorithm missing from it, a fixed parameter, a grid of another size than
        ``budget``.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"tune={value!r} must be a mapping (method, budget, space, ...)")
    raw_space = value.get("space")
    tune = parse(TuneConfig, {k: v for k, v in value.items() if k != "space"}, "tune")
    if not isinstance(raw_space, Mapping) or not raw_space:
        raise ConfigError("tune.space must map every algorithm label to its parameters' values")
    space: dict[str, dict[str, Any]] = {}
    for label, params in raw_space.items():
        key = join("tune.space", label)
        if label not in labels:
            raise ConfigError(f"{key}: not an algorithm label of this config ({', '.join(labels)})")
        if not isinstance(params, Mapping):
            raise ConfigError(f"{key}={params!r} must map parameter names to values")
        space[label] = {}
        for name, values in params.items():
            if name in FIXED:
                raise ConfigError(
                    f"{join(key, name)}: {name} is fixed when tuning (every algorithm gets the "
                    "same budget and local updates per round)"
                )
            space[label][name] = _parse_values(values, join(key, name), tune.method)
        if tune.method == "grid" and params:
            size = math.prod(len(v) for v in space[label].values())
            if size != tune.budget:
                raise ConfigError(
                    f"{key}: the grid has {size} points but tune.budget is {tune.budget}; every "
                    "algorithm gets the same budget (give each grid budget points, or use "
                    "method: random)"
                )
    missing = [label for label in labels if label not in space]
    if missing:
        raise ConfigError(
            f"tune.space lacks {', '.join(missing)}: every algorithm is tuned with the same "
            "budget (an empty mapping {} tunes nothing for it)"
        )
    return dataclasses.replace(tune, space=space)


def with_values(config: ExperimentConfig, label: str, values: Mapping[str, Any]):
    """``config`` with ``values`` set for ``label``: FederationConfig fields in
    ``overrides.<label>``, other names as the algorithm's options."""
    from pppml_jax.experiments.config import FEDERATION_FIELDS, AlgorithmSpec

    fields = {k: v for k, v in values.items() if k in FEDERATION_FIELDS}
    options = {k: v for k, v in values.items() if k not in FEDERATION_FIELDS}
    algorithms = tuple(
        AlgorithmSpec(s.name, {**s.options, **options}, s.label) if s.label == label else s
        for s in config.algorithms
    )
    overrides = dict(config.overrides)
    overrides[label] = {**overrides.get(label, {}), **fields}
    return dataclasses.replace(config, algorithms=algorithms, overrides=overrides)


def check_tune(config: ExperimentConfig) -> None:
    """Every candidate value of ``config.tune`` builds a valid algorithm and FederationConfig,
    and no override changes the local updates per round.

    Raises:
      ConfigError: naming ``tune.space.<label>.<name>`` or ``overrides.<label>.<field>``.
    """
    tune = config.tune
    if tune is None:
        return
    for label in config.labels:
        for field in SAME_FOR_ALL:
            if field in config.overrides.get(label, {}):
                raise ConfigError(
                    f"overrides.{label}.{field}: with tune, every algorithm uses "
                    f"training.{field} (the same local updates per round)"
                )
        for name, values in tune.space[label].items():
            candidates = (values.low, values.high) if isinstance(values, Range) else values
            for candidate in candidates:
                try:
                    trial = with_values(config, label, {name: candidate})
                    trial.algorithm(label).algorithm()
                    trial.federation_config(label)
                except (ConfigError, TypeError, ValueError) as err:
                    raise ConfigError(
                        f"tune.space.{label}.{name}={candidate!r} is not accepted: {err}"
                    ) from err
