"""Federated algorithms as values, and the pure local steps they are built from.

An :class:`Algorithm` is a NamedTuple of pure functions (what the server broadcasts, what a
client keeps, one local step, what a client sends, how the server updates, which model a
client evaluates); the federation engine runs any of them::

    hist = pj.federation.run(loss, params, clients, algorithm=pj.algorithms.ditto(lam=0.1))

The factories below are the built-ins; ``make_algorithm("fedprox")`` or
``make_algorithm({"name": "fedprox", "mu": 0.01})`` builds one by name. docs/algorithms.md
gives each one's equations and shows how to write your own.

The local steps (``fedavg_step``, ``perfedavg_step``, ``personalize``) are pure functions of
``(loss_fn, params, batches, hyper-parameters)``: no I/O, no loops over clients.
"""

from pppml_jax.algorithms.apfl import ApflState, apfl
from pppml_jax.algorithms.base import (
    Algorithm,
    Context,
    ModelCarry,
    apply_mean_delta,
    init_server_optimizer,
    loss_and_grad,
    model_delta,
    server_mean_delta,
    start_model,
    step_model,
)
from pppml_jax.algorithms.ditto import DittoState, ditto
from pppml_jax.algorithms.meta import perfedavg, pppml
from pppml_jax.algorithms.meta_gradient import (
    VARIANTS,
    meta_gradient,
    meta_gradient_stateful,
    perfedavg_step,
)
from pppml_jax.algorithms.partial import PersonalParams, fedbn, fedper, fedrep
from pppml_jax.algorithms.personalize import personalize
from pppml_jax.algorithms.registry import BUILTINS, make_algorithm
from pppml_jax.algorithms.scaffold import scaffold
from pppml_jax.algorithms.sgd_step import fedavg_step
from pppml_jax.algorithms.standard import PersonalModel, fedavg, fedprox, local, one_model

__all__ = [
    "BUILTINS",
    "VARIANTS",
    "Algorithm",
    "ApflState",
    "Context",
    "DittoState",
    "ModelCarry",
    "PersonalModel",
    "PersonalParams",
    "apfl",
    "apply_mean_delta",
    "ditto",
    "fedavg",
    "fedavg_step",
    "fedbn",
    "fedper",
    "fedprox",
    "fedrep",
    "init_server_optimizer",
    "local",
    "loss_and_grad",
    "make_algorithm",
    "meta_gradient",
    "meta_gradient_stateful",
    "model_delta",
    "one_model",
    "perfedavg",
    "perfedavg_step",
    "personalize",
    "pppml",
    "scaffold",
    "server_mean_delta",
    "start_model",
    "step_model",
]
