"""The federated round: client sampling, vmap/loop over clients, aggregation, evaluation, state."""

from pppml_jax.federation.aggregation import client_deltas, server_step, weighted_mean
from pppml_jax.federation.clients import ClientBlock, stack_clients
from pppml_jax.federation.config import ALGORITHMS, FederationConfig
from pppml_jax.federation.engine import (
    DEFAULT_SECURE,
    Evaluation,
    Federation,
    RoundError,
    RoundInfo,
    resolve_execution,
)
from pppml_jax.federation.run import History, run
from pppml_jax.federation.sampling import num_sampled, sample_clients
from pppml_jax.federation.state import FederationState

__all__ = [
    "ALGORITHMS",
    "DEFAULT_SECURE",
    "ClientBlock",
    "Evaluation",
    "Federation",
    "FederationConfig",
    "FederationState",
    "History",
    "RoundError",
    "RoundInfo",
    "client_deltas",
    "num_sampled",
    "resolve_execution",
    "run",
    "sample_clients",
    "server_step",
    "stack_clients",
    "weighted_mean",
]
