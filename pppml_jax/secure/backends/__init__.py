"""Registry of encryption backends: ``plain``, ``bfv``, ``ckks``, ``concrete``.

Each entry pairs a frozen options dataclass with a :class:`Backend` class. Backends import
their library (TenSEAL, concrete-python) only when an instance is made.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pppml_jax.secure.backends.base import Backend, BackendInfo
from pppml_jax.secure.backends.bfv import BFVBackend, BFVConfig
from pppml_jax.secure.backends.ckks import CKKSBackend, CKKSConfig
from pppml_jax.secure.backends.concrete import ConcreteBackend, ConcreteConfig
from pppml_jax.secure.backends.plain import PlainBackend, PlainConfig
from pppml_jax.secure.errors import InvalidOptionError

BACKENDS: dict[str, tuple[type, type[Backend]]] = {
    "plain": (PlainConfig, PlainBackend),
    "bfv": (BFVConfig, BFVBackend),
    "ckks": (CKKSConfig, CKKSBackend),
    "concrete": (ConcreteConfig, ConcreteBackend),
}


def available_backends() -> tuple[str, ...]:
    """Names of the registered backends."""
    return tuple(BACKENDS)


def backend_option_names(name: str) -> tuple[str, ...]:
    """The option names a backend accepts (fields of its options dataclass)."""
    return tuple(f.name for f in dataclasses.fields(_entry(name)[0]))


def _entry(name: str) -> tuple[type, type[Backend]]:
    if name not in BACKENDS:
        raise InvalidOptionError(f"backend={name!r}: choose one of {sorted(BACKENDS)}")
    return BACKENDS[name]


def make_backend(name: str, **options: Any) -> Backend:
    """Builds a backend from its name and options.

    Args:
      name: a registry name (see :func:`available_backends`).
      **options: fields of that backend's options dataclass (e.g. ``preset``, ``bits``).

    Raises:
      InvalidOptionError: unknown name or option, or an invalid option value.
    """
    config_cls, backend_cls = _entry(name)
    allowed = backend_option_names(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InvalidOptionError(
            f"backend {name!r} has no option(s) {unknown}; its options are {list(allowed)}"
        )
    return backend_cls(config_cls(**options))


__all__ = [
    "BACKENDS",
    "BFVBackend",
    "BFVConfig",
    "Backend",
    "BackendInfo",
    "CKKSBackend",
    "CKKSConfig",
    "ConcreteBackend",
    "ConcreteConfig",
    "PlainBackend",
    "PlainConfig",
    "available_backends",
    "backend_option_names",
    "make_backend",
]
