"""Built-in algorithms by name, for configs and the command line: ``make_algorithm(spec)``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from pppml_jax.algorithms.base import Algorithm

_FACTORIES: dict[str, str] = {
    "local": "pppml_jax.algorithms.standard:local",
    "fedavg": "pppml_jax.algorithms.standard:fedavg",
    "fedprox": "pppml_jax.algorithms.standard:fedprox",
    "perfedavg": "pppml_jax.algorithms.meta:perfedavg",
    "pppml": "pppml_jax.algorithms.meta:pppml",
    "scaffold": "pppml_jax.algorithms.scaffold:scaffold",
    "fedbn": "pppml_jax.algorithms.partial:fedbn",
    "fedper": "pppml_jax.algorithms.partial:fedper",
    "fedrep": "pppml_jax.algorithms.partial:fedrep",
    "ditto": "pppml_jax.algorithms.ditto:ditto",
    "apfl": "pppml_jax.algorithms.apfl:apfl",
}

BUILTINS: tuple[str, ...] = tuple(_FACTORIES)
"""The names :func:`make_algorithm` accepts."""


def factory(name: str) -> Callable[..., Algorithm]:
    """The factory function of built-in algorithm ``name`` (e.g. ``pj.algorithms.ditto``).

    Raises:
      ValueError: if ``name`` is not a built-in.
    """
    if not isinstance(name, str) or name not in _FACTORIES:
        raise ValueError(f"algorithm {name!r} is unknown; use one of {', '.join(BUILTINS)}")
    module, attr = _FACTORIES[name].split(":")
    return getattr(importlib.import_module(module), attr)


def option_names(name: str) -> tuple[str, ...]:
    """The keyword options the factory of ``name`` accepts."""
    params = inspect.signature(factory(name)).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def make_algorithm(spec: str | Mapping[str, Any] | Algorithm) -> Algorithm:
    """An :class:`Algorithm` from a name, ``{"name": ..., **options}`` or an Algorithm.

    Example:
      >>> make_algorithm({"name": "ditto", "lam": 0.1}).name
      'ditto'

    Raises:
      ValueError: on an unknown name, an unknown option (naming it and the accepted ones)
        or a bad option value.
    """
    if isinstance(spec, Algorithm):
        return spec
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, Mapping):
        options = dict(spec)
        name = options.pop("name", None)
        if name is None:
            raise ValueError(f"algorithm {dict(spec)!r} has no 'name'")
    else:
        raise ValueError(
            f"algorithm={spec!r} must be a name, a mapping with a 'name' or an Algorithm"
        )
    make = factory(name)
    accepted = option_names(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"algorithm {name!r} has no option(s) {unknown}; it accepts "
            f"{', '.join(accepted) if accepted else 'none'}"
        )
    try:
        return make(**options)
    except TypeError as err:
        raise ValueError(f"algorithm {name!r}: {err}") from err
