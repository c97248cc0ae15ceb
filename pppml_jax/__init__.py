"""pppml-jax: personalized, privacy-preserving federated learning (PPPML-HMI) as pure JAX functions.

The local steps are exported at top level; the larger parts are sub-packages that are imported
on first access, so that ``import pppml_jax`` stays fast and never pulls in an encryption
library that the user did not choose::

    import pppml_jax as pj
    new_params = pj.perfedavg_step(loss_fn, params, batch_a, batch_b, alpha=0.01, beta=0.001)
    hist = pj.federation.run(loss_fn, params, clients, algorithm="perfedavg", alpha=0.01,
                             beta=0.001)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from pppml_jax.algorithms import fedavg_step, perfedavg_step, personalize

__version__ = "0.2.0"

_SUBPACKAGES = (
    "algorithms",
    "losses",
    "attacks",
    "data",
    "experiments",
    "federation",
    "metrics",
    "models",
    "secure",
)

__all__ = [
    "__version__",
    "fedavg_step",
    "perfedavg_step",
    "personalize",
    *_SUBPACKAGES,
]

if TYPE_CHECKING:  # pragma: no cover - for static analysers only
    from pppml_jax import (  # noqa: F401
        attacks,
        data,
        experiments,
        federation,
        losses,
        metrics,
        models,
        secure,
    )


def __getattr__(name: str):
    """Imports a sub-package on first access (``pj.secure``, ``pj.federation``, ...)."""
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"pppml_jax.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'pppml_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
