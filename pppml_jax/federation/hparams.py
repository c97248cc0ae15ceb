"""The run's algorithm and its hyper-parameters, resolved from a :class:`FederationConfig`.

Float hyper-parameters become a dict of ``[]`` float32 values that every compiled program
takes as an argument. An algorithm's ``None`` hyper-parameter takes the run's value of the
same name (``lr``, ``alpha``, ``beta``), else the run's ``lr``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import optax

from pppml_jax.algorithms.base import ENGINE_HPARAMS, Algorithm, Context
from pppml_jax.algorithms.registry import make_algorithm
from pppml_jax.federation.config import FederationConfig


class IgnoredOptionWarning(UserWarning):
    """A run option that the chosen algorithm does not use."""


def _run_value(config: FederationConfig, name: str) -> float:
    if name == "alpha":
        return config.inner_lr
    if name == "beta":
        return float(config.beta if config.beta is not None else config.lr)
    value = getattr(config, name, None)
    return float(config.lr if value is None or isinstance(value, str) else value)


def resolve(config: FederationConfig) -> tuple[Algorithm, dict[str, float], dict | None]:
    """``(algorithm, hparams, secure options or None)`` of a run.

    Warns:
      IgnoredOptionWarning: for ``beta``, ``variant`` or ``delta`` set on the run when the
        algorithm has no such option.
    """
    spec = config.algorithm
    if isinstance(spec, str) and spec in ("perfedavg", "pppml"):
        algorithm = make_algorithm({"name": spec, "variant": config.variant, "delta": config.delta})
    else:
        algorithm = make_algorithm(spec)
    ignored = []
    if config.beta is not None and "beta" not in algorithm.hparams:
        ignored.append(f"beta={config.beta}")
    if config.variant != "fo" and "variant" not in algorithm.options:
        ignored.append(f"variant={config.variant!r}")
    if config.delta != 1e-3 and "delta" not in algorithm.hparams:
        ignored.append(f"delta={config.delta}")
    if ignored:
        warnings.warn(
            f"algorithm {algorithm.name!r} does not use {', '.join(ignored)}; they are ignored",
            IgnoredOptionWarning,
            stacklevel=3,
        )
    hparams = {
        name: float(_run_value(config, name) if value is None else value)
        for name, value in algorithm.hparams.items()
    }
    hparams.setdefault("alpha", config.inner_lr)
    hparams["server_lr"] = float(config.server_lr)
    assert all(name in hparams for name in ENGINE_HPARAMS)
    secure = config.secure if config.secure is not None else algorithm.secure
    return algorithm, hparams, None if secure is None else dict(secure)


def _optimizer_factory(spec: Any) -> Callable[[Any], optax.GradientTransformation]:
    if isinstance(spec, optax.GradientTransformation):
        return lambda step_size: spec
    return {"sgd": optax.sgd, "adam": optax.adam}[spec]


def context_factory(
    config: FederationConfig, loss_fn: Callable, participation: float
) -> Callable[[Mapping[str, Any]], Context]:
    """``hp -> Context`` for the run (called inside the compiled programs)."""
    local = _optimizer_factory(config.local_optimizer)
    server = (
        _optimizer_factory(config.server_optimizer)
        if config.server_optimizer is not None
        else optax.sgd
    )

    def make(hp: Mapping[str, Any]) -> Context:
        return Context(
            loss_fn=loss_fn,
            hp=dict(hp),
            local_steps=config.local_steps,
            participation=float(participation),
            local_optimizer=local,
            server_optimizer=server,
        )

    return make
