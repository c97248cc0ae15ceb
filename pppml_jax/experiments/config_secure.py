"""The ``secure`` options of a config, checked against the secure package's own option lists.

``secure: {backend: bfv, clip: 2.0, preset: wide}`` mixes three kinds of option that
:func:`pppml_jax.secure.cyclic_aggregate` accepts: the backend's (fields of its options
dataclass, :func:`pppml_jax.secure.backends.backend_option_names`), ``rotate_every``, and the
protocol's (fields of :class:`pppml_jax.secure.options.RingOptions`). :func:`parse_secure`
refuses an unknown backend, an unknown option, a value of the wrong type and a value the backend
or the ring refuses (:func:`check_backend_options` builds the backend, which checks its options
but generates no key) when the config is loaded, before any data is read or any round is trained.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from pppml_jax.experiments.config_schema import ConfigError, check_value, join

ENGINE_OPTIONS = ("round_index", "seed")
"""Arguments of ``cyclic_aggregate`` that the federation engine sets itself, every round."""


@dataclasses.dataclass(frozen=True)
class SecureConfig:
    """Validated secure-aggregation options of one algorithm.

    Attributes:
      backend: a name of ``pppml_jax.secure.backends.available_backends()``.
      options: every other option, by name (backend, ``rotate_every`` and protocol options).
    """

    backend: str
    options: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The mapping ``FederationConfig.secure`` takes: ``{"backend": ..., **options}``."""
        return {"backend": self.backend, **self.options}


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved: names are still checked
        return {f.name: Any for f in dataclasses.fields(cls)}


def option_types(backend: str) -> dict[str, Any]:
    """Every option name ``backend`` accepts in a config, with its type hint."""
    from pppml_jax.secure.backends import BACKENDS
    from pppml_jax.secure.options import RingOptions

    types_ = {"rotate_every": int | None}
    types_.update(_hints(RingOptions))
    types_.update(_hints(BACKENDS[backend][0]))
    return types_


def check_backend_options(backend: str, options: Mapping[str, Any], key: str) -> None:
    """Refuses backend options (and ``rotate_every``) that ``backend`` would refuse at run time.

    Builds the backend (:func:`pppml_jax.secure.backends.make_backend`), whose constructor
    checks its options (presets, bit widths, ``max_parties``); no key is generated. A missing
    backend library (TenSEAL, concrete-python) is not a config error: the run reports it.

    Raises:
      ConfigError: naming the option by its dotted key (``key.<option>``), the value and what
        is accepted.
    """
    from pppml_jax.secure.backends import backend_option_names, make_backend
    from pppml_jax.secure.errors import BackendUnavailableError, InvalidOptionError

    rotate = options.get("rotate_every")
    if rotate is not None and rotate < 1:
        raise ConfigError(f"{join(key, 'rotate_every')}={rotate!r} must be null or >= 1")
    names = backend_option_names(backend)
    try:
        make_backend(backend, **{k: v for k, v in options.items() if k in names})
    except BackendUnavailableError:
        pass
    except InvalidOptionError as err:  # the backends name the option first: "preset='x': ..."
        raise ConfigError(f"{key}.{err}") from err
    except RuntimeError as err:  # e.g. TenSEAL: no batching prime of `bits` for the degree
        given = ", ".join(f"{k}={options[k]!r}" for k in sorted(options) if k in names)
        raise ConfigError(f"{key}: backend {backend!r} refuses {given}: {err}") from err


def parse_secure(value: Any, key: str) -> SecureConfig | None:
    """``value`` (a config's ``secure`` mapping or None) as a :class:`SecureConfig`.

    Raises:
      ConfigError: not a mapping, no or an unknown ``backend``, an unknown option (with the
        accepted ones), or a value of the wrong type; each named by its dotted key.
    """
    from pppml_jax.secure.backends import available_backends
    from pppml_jax.secure.options import RingOptions

    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}={value!r} must be null or a mapping like {{backend: bfv}}")
    backends = available_backends()
    backend = value.get("backend", "plain")
    if backend not in backends:
        raise ConfigError(
            f"{join(key, 'backend')}={backend!r} is not a secure backend; use one of "
            f"{', '.join(backends)}"
        )
    known = option_types(backend)
    options = {}
    for name, item in value.items():
        if name == "backend":
            continue
        if name not in known:
            hint = " (the federation sets it every round)" if name in ENGINE_OPTIONS else ""
            raise ConfigError(
                f"unknown secure option {join(key, name)!r}{hint}; backend {backend!r} accepts "
                f"{', '.join(sorted(known))}"
            )
        options[name] = check_value(known[name], item, join(key, name))
    ring = {
        k: v for k, v in options.items() if k in {f.name for f in dataclasses.fields(RingOptions)}
    }
    try:
        RingOptions(**ring).validated(types.SimpleNamespace(name=backend))
    except ValueError as err:  # RingOptions names the option first: "on_dropout='x': ..."
        raise ConfigError(f"{key}.{err}") from err
    check_backend_options(backend, options, key)
    return SecureConfig(backend=backend, options=options)
