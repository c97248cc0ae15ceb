"""Local steps: FedAvg, Per-FedAvg (first order, Hessian-free, exact) and personalization.

Everything here is a pure function of ``(loss_fn, params, batches, hyper-parameters)``: no I/O,
no loops over clients. The federation engine batches these over clients.
"""

from pppml_jax.algorithms.fedavg import fedavg_step
from pppml_jax.algorithms.perfedavg import (
    VARIANTS,
    meta_gradient,
    meta_gradient_stateful,
    perfedavg_step,
)
from pppml_jax.algorithms.personalize import personalize

__all__ = [
    "VARIANTS",
    "fedavg_step",
    "meta_gradient",
    "meta_gradient_stateful",
    "perfedavg_step",
    "personalize",
]
