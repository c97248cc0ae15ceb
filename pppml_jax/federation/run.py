"""``pj.federation.run``: a whole federated training in one call, for research code."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from pppml_jax.algorithms.base import Algorithm
from pppml_jax.federation.config import FederationConfig
from pppml_jax.federation.engine import Federation
from pppml_jax.federation.history import (
    DivergenceError,
    History,
    RoundRecord,
    algorithm_name,
)
from pppml_jax.federation.state import FederationState
from pppml_jax.federation.types import NonFiniteError, RoundError, RoundInfo
from pppml_jax.typing import Params

DIVERGENCE_FACTOR = 1e3
"""Default of ``divergence_factor``: a training loss above 1000x the first round's diverged."""


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
    divergence_factor: float | None = DIVERGENCE_FACTOR,
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
      divergence_factor: stop with :class:`DivergenceError` when a round's training loss
        exceeds this many times the first round's (None: only when it is not finite).
      **options: any other :class:`FederationConfig` field (``clients_per_round``,
        ``local_optimizer``, ``server_lr``, ``model_state_mode``, ``personalize_steps``, ...).

    Returns:
      The :class:`History`.

    Raises:
      ValueError: on bad options or data; ``RoundError`` if a round fails (its dict is not
        recorded; ``hist`` is not returned — catch it and continue from the last good state).
      DivergenceError: (a ``RoundError``) the training loss stopped being finite or grew past
        ``divergence_factor`` times the first round's; the message names algorithm, seed and
        round.

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
    steps = iter_rounds(
        federation, state, last, evaluate=evaluate, divergence_factor=divergence_factor
    )
    for state, row in steps:  # noqa: B007 - the state after the last round is returned
        record = RoundRecord.from_dict(row)
        history.append(record)
        if callback is not None:
            callback(record)
    return History(state.params, state.model_state, history, state, config)


def iter_rounds(
    federation: Federation,
    state: FederationState,
    last: int,
    *,
    evaluate: bool = True,
    divergence_factor: float | None = DIVERGENCE_FACTOR,
    first_loss: float | None = None,
) -> Iterator[tuple[FederationState, dict]]:
    """Runs rounds from ``state.round`` until round ``last``, yielding ``(state, record)``.

    ``record`` is the round's dict (:func:`round_record`), with the evaluation's fields
    (:func:`evaluation_record`) every ``eval_every`` rounds and after round ``last`` when
    ``evaluate``.

    The divergence guard compares each round's training loss with ``first_loss``: the first
    round's (pass it when continuing a run; by default the first loss this call sees). A loss
    above ``divergence_factor * first_loss`` (when ``first_loss > 0``), or a non-finite one,
    raises :class:`DivergenceError`; that round is not yielded.
    """
    if divergence_factor is not None and not divergence_factor >= 1:
        raise ValueError(f"divergence_factor={divergence_factor!r} must be >= 1 or None")
    every = federation.config.eval_every
    while state.round < last:
        try:
            state, info = federation.round(state)
        except DivergenceError:
            raise
        except RoundError as err:
            if not isinstance(err, NonFiniteError):  # a failed secure ring is no divergence
                raise
            raise _diverged(federation, int(state.round) + 1, None, first_loss, None) from err
        if first_loss is None:
            first_loss = info.train_loss
        loss = info.train_loss
        if not math.isfinite(loss):
            raise _diverged(federation, info.round, loss, first_loss, None)
        if (
            divergence_factor is not None
            and first_loss > 0
            and loss > divergence_factor * first_loss
        ):
            raise _diverged(federation, info.round, loss, first_loss, divergence_factor)
        record = round_record(info)
        if evaluate and (info.round % every == 0 or info.round == last):
            record.update(evaluation_record(federation, state))
        yield state, record


def _diverged(
    federation: Federation,
    round_: int,
    loss: float | None,
    first: float | None,
    factor: float | None,
) -> DivergenceError:
    name, seed = algorithm_name(federation.config), federation.config.seed
    where = f"{name} (seed {seed}) diverged in round {round_}"
    if loss is None:
        why = "a client's training produced non-finite values (NaN or inf)"
    elif factor is None:
        why = f"the training loss is {loss} (not finite)"
    else:
        why = (
            f"the training loss {loss:.4g} exceeds {factor:g}x the first round's {first:.4g} "
            "(divergence_factor)"
        )
    message = f"{where}: {why}; lower its learning rates or check its data"
    return DivergenceError(
        message, algorithm=name, seed=seed, round=round_, loss=loss, first_loss=first
    )


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
