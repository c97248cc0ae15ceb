"""Config sections about how a run is repeated, guarded and tracked: ``seeds``,
``divergence`` and ``tracking``.

::

    seeds: 3                 # seeds seed, seed+1, seed+2 (a count) ...
    seeds: [0, 7, 11]        # ... or an explicit list (then ``seed``, if given, is its first)
    divergence:
      factor: 1000.0         # stop a run whose training loss exceeds 1000x its first round's
    tracking:
      tensorboard: true      # event files under <out>/tensorboard/<label>/seed-<s>/
      mlflow: false          # needs the [mlflow] extra; a local file store, <out>/mlruns
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pppml_jax.experiments.config_schema import ConfigError, join, option

MAX_SEEDS = 1000


def parse_seeds(value: Any, seed: int | None) -> tuple[int, ...]:
    """The run's seeds from ``seeds`` (None, a count or a list) and the top-level ``seed``.

    - None: ``(seed,)`` (``seed`` defaults to 0);
    - a count ``n >= 1``: ``(seed, seed + 1, ..., seed + n - 1)``;
    - a list of distinct integers ``>= 0``: that list; ``seed``, when given, must be its first.

    Raises:
      ConfigError: naming ``seeds`` (or ``seed``) and the bad value.
    """
    first = 0 if seed is None else seed
    if value is None:
        return (first,)
    if isinstance(value, bool) or not isinstance(value, (int, list, tuple)):
        raise ConfigError(
            f"seeds={value!r} must be a count (an integer >= 1) or a list of distinct integers"
        )
    if isinstance(value, int):
        if not 1 <= value <= MAX_SEEDS:
            raise ConfigError(f"seeds={value!r} must be a count between 1 and {MAX_SEEDS}")
        return tuple(range(first, first + value))
    if not value:
        raise ConfigError("seeds=[] must name at least one seed")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise ConfigError(f"{join('seeds', i)}={item!r} must be an integer >= 0")
    if len(set(value)) != len(value):
        raise ConfigError(f"seeds={list(value)!r} names a seed twice")
    if seed is not None and seed != value[0]:
        raise ConfigError(
            f"seed={seed!r} differs from the first of seeds={list(value)!r}; drop 'seed' or make "
            "it the first seed"
        )
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class DivergenceConfig:
    """``divergence``: when a run counts as diverged (``pj.federation.run``'s guard)."""

    factor: float | None = option(
        1000.0,
        min=1.0,
        help="stop when the training loss exceeds factor x the first round's; null: only "
        "non-finite losses stop a run",
    )


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    """``tracking``: experiment trackers written next to results.json (results never depend
    on them, so they are not part of the run's fingerprint)."""

    tensorboard: bool = option(True, help="TensorBoard event files under <out>/tensorboard/")
    mlflow: bool = option(False, help="MLflow runs in a local file store (the [mlflow] extra)")
    mlflow_uri: str | None = option(None, help="MLflow tracking URI (default file:<out>/mlruns)")
