"""What the engine's parts exchange: round outcomes, evaluations, errors and mode flags."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import numpy as np


class RoundError(RuntimeError):
    """A round failed; the federation state passed to it is unchanged and still valid."""


class NonFiniteError(RoundError):
    """A round failed because a client's output (message or state) was NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class RoundInfo:
    """What one round did.

    Attributes:
      round: the number of completed rounds after this one (1 for the first round).
      seconds: wall time of the round in seconds (the first round includes compilation).
      train_loss: mean local training loss of the sampled clients, weighted by sample count.
      clients: ids of the clients sampled in this round, ascending.
      secure: statistics of the secure aggregation (None without it).
    """

    round: int
    seconds: float
    train_loss: float
    clients: tuple[int, ...]
    secure: dict | None = None


class Evaluation(NamedTuple):
    """Per-client metrics of one evaluation; ``nan`` for a client without test examples."""

    global_: np.ndarray  # [K] float64: the algorithm's global model on each test split
    personalized: np.ndarray  # [K] float64: the algorithm's personalized model


class Shared(NamedTuple):
    """The server side of the state that every client program reads."""

    params: Any  # the global model
    model_state: Any  # the global model state (None for stateless models)
    server_state: Any  # the algorithm's server state


class ClientRows(NamedTuple):
    """Per-client persistent state of some clients: rows of the host-resident store."""

    state: Any  # the algorithm's client state, [C, ...] (or one row when not batched), or None
    model_state: Any  # each client's model state when it stays local, else None


class Message(NamedTuple):
    """What a client sends: the algorithm's message and, when averaged, its model-state delta."""

    algorithm: Any
    model_state: Any


def resolve_execution(execution: str) -> str:
    """``"auto"`` -> ``"loop"`` on CPU, ``"vmap"`` on GPU/TPU; else unchanged.

    On XLA:CPU a jitted loop over clients beats one vmapped program (per-client kernels become
    grouped convolutions, which it runs slowly); on accelerators vmap fills the device.
    """
    if execution == "auto":
        return "loop" if jax.default_backend() == "cpu" else "vmap"
    return execution
