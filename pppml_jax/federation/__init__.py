"""The federated round: client sampling, vmap/loop over clients, aggregation, evaluation, state.

``run`` trains a federation in one call for any :class:`~pppml_jax.algorithms.Algorithm`;
``run_many`` runs seeds x a grid of float hyper-parameters, sharing compiled programs;
``Federation`` exposes the round, evaluation and state for finer control.
"""

from pppml_jax.federation.checkpoint import Checkpointer
from pppml_jax.federation.clients import ClientBlock, stack_clients
from pppml_jax.federation.compilation import enable_compilation_cache
from pppml_jax.federation.config import FederationConfig
from pppml_jax.federation.engine import Federation
from pppml_jax.federation.hparams import IgnoredOptionWarning
from pppml_jax.federation.run import DivergenceError, History, RoundRecord, run
from pppml_jax.federation.state import FederationState
from pppml_jax.federation.sweep import run_many
from pppml_jax.federation.types import (
    Evaluation,
    NonFiniteError,
    RoundError,
    RoundInfo,
    resolve_execution,
)

__all__ = [
    "Checkpointer",
    "ClientBlock",
    "DivergenceError",
    "Evaluation",
    "Federation",
    "FederationConfig",
    "FederationState",
    "History",
    "IgnoredOptionWarning",
    "NonFiniteError",
    "RoundError",
    "RoundInfo",
    "RoundRecord",
    "enable_compilation_cache",
    "resolve_execution",
    "run",
    "run_many",
    "stack_clients",
]
