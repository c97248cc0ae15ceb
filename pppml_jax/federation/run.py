"""``pj.federation.run``: a whole federated training in one call, for research code."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from pppml_jax.algorithms.base import Algorithm
from pppml_jax.federation.config import FederationConfig
from pppml_jax.federation.engine import Federation
from pppml_jax.federation.state import FederationState
from pppml_jax.federation.types import RoundInfo
from pppml_jax.typing import Params


@dataclasses.dataclass(frozen=True)
class RoundRecord:
    """What one round of :func:`run` did and, when evaluated, scored.

    Attributes:
      round: the number of completed rounds after it (1-based).
      seconds: wall time of the round (the first includes compilation).
      train_loss: mean local training loss of the sampled clients, sample-weighted.
      clients: the sampled clients' ids.
      secure: the secure ring's statistics (backend, bytes, clipping, error bound), or None.
      mean_global, mean_personalized: mean metric over clients (None when not evaluated).
      per_client_global, per_client_personalized: one value per client (None when not
        evaluated; ``nan`` for a client without test data).
      eval_seconds: wall time of the evaluation (None when not evaluated).

    ``record["train_loss"]`` reads a field like a dict key (for code written against the
    dict records of earlier versions); :meth:`to_dict` gives the JSON-able dict.
    """

    round: int
    seconds: float
    train_loss: float
    clients: list[int]
    secure: dict | None = None
    mean_global: float | None = None
    mean_personalized: float | None = None
    per_client_global: list[float] | None = None
    per_client_personalized: list[float] | None = None
    eval_seconds: float | None = None

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> RoundRecord:
        return cls(**{f.name: record.get(f.name) for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict:
        """The record as a dict without its empty fields (as results.json stores rounds)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def __getitem__(self, key: str) -> Any:
        value = self.to_dict()
        if key not in value:
            raise KeyError(key)
        return value[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()


@dataclasses.dataclass
class History:
    """The outcome of :func:`run`.

    Attributes:
      params: the final global model (for "local": the common initial model).
      model_state: the final global model state (None for stateless models).
      rounds: one :class:`RoundRecord` per round.
      state: the final :class:`FederationState` (pass it back as ``state=`` to continue).
      config: the configuration that ran.
    """

    params: Params
    model_state: Any
    rounds: list[RoundRecord]
    state: FederationState
    config: FederationConfig

    @property
    def client_params(self) -> Params | None:
        """``[K, ...]`` every client's own model (local, ditto, ...), else None."""
        return self.state.client_params


def run(
    loss_fn: Callable,
    params: Params,
    clients: Sequence[Mapping[str, np.ndarray]],
    *,
    algorithm: str | Algorithm = "fedavg",
    rounds: int = 10,
    local_steps: int = 5,
    batch_size: int = 16,
    lr: float = 0.05,
    alpha: float | None = None,
    beta: float | None = None,
    variant: str = "fo",
    execution: str = "auto",
    secure: Mapping[str, Any] | None = None,
    seed: int = 0,
    test_clients: Sequence[Mapping[str, np.ndarray]] | None = None,
    eval_fn: Callable | None = None,
    model_state: Any = None,
    state: FederationState | None = None,
    callback: Callable[[dict], None] | None = None,
    **options: Any,
) -> History:
    """Trains a federation and returns its :class:`History`.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` (pure, jit- and vmap-able); when
        ``model_state`` is given, ``loss_fn(params, model_state, batch) -> (scalar, new_state)``.
      params: the initial global model, a pytree.
      clients: one dict per client of arrays with a leading examples axis (lengths may differ);
        aggregation weights are these training-sample counts.
      algorithm: an :class:`~pppml_jax.algorithms.Algorithm` value
        (``pj.algorithms.fedprox(mu=0.01)``, ``pj.algorithms.ditto(lam=0.1)``, your own) or
        a built-in's name ("local", "fedavg", "perfedavg", "pppml", ...).
      rounds, local_steps, batch_size, lr, alpha, beta, variant, execution, secure, seed: see
        :class:`FederationConfig`.
      test_clients: per-client test data; with ``eval_fn``, evaluated every ``eval_every`` rounds.
      eval_fn: ``eval_fn(params, batch) -> [B]`` per-example metric (with model_state:
        ``eval_fn(params, model_state, batch)``).
      model_state: initial model state (e.g. BatchNorm ``batch_stats``) for stateful models.
      state: a :class:`FederationState` to continue from (e.g. ``hist.state``); ``rounds`` more
        rounds are run after it.
      callback: called after every round with its :class:`RoundRecord` (progress, logging).
      **options: any other :class:`FederationConfig` field (``clients_per_round``,
        ``local_optimizer``, ``server_lr``, ``model_state_mode``, ``personalize_steps``, ...).

    Returns:
      The :class:`History`.

    Raises:
      ValueError: on bad options or data; ``RoundError`` if a round fails (its dict is not
        recorded; ``hist`` is not returned — catch it and continue from the last good state).

    Example:
      >>> loss = lambda w, b: jnp.mean((b["x"] @ w - b["y"]) ** 2)
      >>> hist = pj.federation.run(loss, jnp.zeros(3), clients, algorithm="perfedavg",
      ...                          rounds=5, alpha=0.01, beta=0.05)
      >>> hist = pj.federation.run(loss, jnp.zeros(3), clients, rounds=5,
      ...                          algorithm=pj.algorithms.fedprox(mu=0.01, lr=0.1))
    """
    config = FederationConfig(
        algorithm=algorithm,
        rounds=rounds,
        local_steps=local_steps,
        batch_size=batch_size,
        lr=lr,
        alpha=alpha,
        beta=beta,
        variant=variant,
        execution=execution,
        secure=secure,
        seed=seed,
        **options,
    )
    federation = Federation(
        loss_fn,
        clients,
        config,
        eval_fn=eval_fn,
        test_clients=test_clients,
        stateful=model_state is not None,
    )
    if state is None:
        state = federation.init(params, model_state)
    evaluate = eval_fn is not None and test_clients is not None
    history: list[RoundRecord] = []
    last = state.round + config.rounds
    steps = iter_rounds(federation, state, last, evaluate=evaluate)
    for state, row in steps:  # noqa: B007 - the state after the last round is returned
        record = RoundRecord.from_dict(row)
        history.append(record)
        if callback is not None:
            callback(record)
    return History(state.params, state.model_state, history, state, config)


def iter_rounds(
    federation: Federation, state: FederationState, last: int, *, evaluate: bool = True
) -> Iterator[tuple[FederationState, dict]]:
    """Runs rounds from ``state.round`` until round ``last``, yielding ``(state, record)``.

    ``record`` is the round's dict (:func:`round_record`), with the evaluation's fields
    (:func:`evaluation_record`) every ``eval_every`` rounds and after round ``last`` when
    ``evaluate``.
    """
    every = federation.config.eval_every
    while state.round < last:
        state, info = federation.round(state)
        record = round_record(info)
        if evaluate and (info.round % every == 0 or info.round == last):
            record.update(evaluation_record(federation, state))
        yield state, record


def round_record(info: RoundInfo) -> dict:
    """A round's JSON-able dict (see :class:`History`)."""
    record = {
        "round": info.round,
        "seconds": info.seconds,
        "train_loss": info.train_loss,
        "clients": list(info.clients),
    }
    if info.secure is not None:
        record["secure"] = info.secure
    return record


def evaluation_record(federation: Federation, state: FederationState) -> dict:
    """Evaluates ``state`` and returns the metric fields of a round's dict."""
    import time

    start = time.perf_counter()
    ev = federation.evaluate(state)
    return {
        "mean_global": float(np.nanmean(ev.global_)),
        "mean_personalized": float(np.nanmean(ev.personalized)),
        "per_client_global": [float(v) for v in ev.global_],
        "per_client_personalized": [float(v) for v in ev.personalized],
        "eval_seconds": time.perf_counter() - start,
    }
