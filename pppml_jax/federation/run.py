"""``pj.federation.run``: a whole federated training in one call, for research code."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pppml_jax.algorithms.base import Algorithm
from pppml_jax.federation.config import FederationConfig
from pppml_jax.federation.engine import Federation
from pppml_jax.federation.state import FederationState
from pppml_jax.federation.types import NonFiniteError, RoundError, RoundInfo
from pppml_jax.typing import Params

DIVERGENCE_FACTOR = 1e3
"""Default of ``divergence_factor``: a training loss above 1000x the first round's diverged."""
HISTORY_FORMAT = "pppml_jax.History/1"


class DivergenceError(RoundError):
    """A run diverged: its training loss stopped being finite, or grew past
    ``divergence_factor`` times its first round's. The state before the round is intact.

    Attributes:
      algorithm, seed, round: which run diverged and in which round (1-based).
      loss, first_loss: the round's training loss (None when a client's output was not
        finite) and the first round's.
    """

    def __init__(
        self,
        message: str,
        *,
        algorithm: str,
        seed: int,
        round: int,
        loss: float | None,
        first_loss: float | None,
    ):
        super().__init__(message)
        self.algorithm, self.seed, self.round = algorithm, seed, round
        self.loss, self.first_loss = loss, first_loss

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able facts (as results.json records a diverged run)."""
        return {
            "algorithm": self.algorithm,
            "seed": self.seed,
            "round": self.round,
            "loss": self.loss if self.loss is None or math.isfinite(self.loss) else None,
            "first_loss": self.first_loss,
            "message": str(self),
        }


def algorithm_name(config: FederationConfig) -> str:
    """The name of ``config.algorithm`` (a built-in's name or an Algorithm value's ``name``)."""
    algorithm = config.algorithm
    return algorithm if isinstance(algorithm, str) else str(getattr(algorithm, "name", algorithm))


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
      state: the final :class:`FederationState` (pass it back as ``state=`` to continue);
        None in a History read by :meth:`from_json`.
      config: the configuration that ran (None when read back with an Algorithm value).

    :meth:`to_json` saves it (rounds and config as JSON, the models in an ``.npz`` next to
    it); :meth:`from_json` reads it back.
    """

    params: Params
    model_state: Any
    rounds: list[RoundRecord]
    state: FederationState | None
    config: FederationConfig | None
    saved_client_params: Params | None = None

    @property
    def client_params(self) -> Params | None:
        """``[K, ...]`` every client's own model (local, ditto, ...), else None."""
        if self.state is None:
            return self.saved_client_params
        return self.state.client_params

    def to_json(self, path: str | Path) -> Path:
        """Writes ``path`` (JSON: format, config, rounds) and ``path`` with suffix ``.npz``
        (the global params, model state and client params as arrays by key path).

        The federation state itself (optimizer and algorithm state) is not saved: continue a
        run from a :class:`~pppml_jax.federation.Checkpointer` checkpoint. Returns ``path``.
        """
        from flax import serialization

        from pppml_jax.federation.placement import to_host

        path = Path(path)
        trees = {"params": self.params, "model_state": self.model_state}
        trees["client_params"] = self.client_params
        arrays = _flatten(serialization.to_state_dict(to_host(trees)))
        np.savez(path.with_suffix(".npz"), **arrays)
        config = None if self.config is None else _config_dict(self.config)
        document = {
            "format": HISTORY_FORMAT,
            "config": config,
            "rounds": [r.to_dict() for r in self.rounds],
            "arrays": path.with_suffix(".npz").name,
        }
        path.write_text(json.dumps(_strict(document), indent=1) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path, like: Params | None = None) -> History:
        """Reads a History written by :meth:`to_json`.

        The models come back as nested dicts of numpy arrays (Flax params exactly); with
        ``like`` (a pytree of the params' structure) ``params`` takes that structure. ``state``
        is None; ``config`` is rebuilt when its algorithm was a built-in's name.

        Raises:
          ValueError: the file is not a saved History.
        """
        from flax import serialization

        path = Path(path)
        document = json.loads(path.read_text())
        if not isinstance(document, dict) or document.get("format") != HISTORY_FORMAT:
            raise ValueError(f"{path} is not a History saved by History.to_json")
        with np.load(path.parent / document["arrays"]) as npz:
            trees = _unflatten({k: npz[k] for k in npz.files})
        params = trees.get("params")
        if like is not None and params is not None:
            params = serialization.from_state_dict(like, params)
        config, raw = None, dict(document.get("config") or {})
        if raw and not raw.pop("algorithm_value", False):
            config = FederationConfig(**raw)
        rounds = [RoundRecord.from_dict(r) for r in document["rounds"]]
        return cls(
            params, trees.get("model_state"), rounds, None, config, trees.get("client_params")
        )


def _config_dict(config: FederationConfig) -> dict[str, Any]:
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    if not isinstance(fields["algorithm"], str):
        fields["algorithm"] = algorithm_name(config)
        fields["algorithm_value"] = True  # read back without config: the value is code
    return json.loads(json.dumps(fields, default=repr))


def _strict(obj: Any) -> Any:
    """JSON without NaN: non-finite floats as None."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts of arrays -> ``{"params/Dense_0/kernel": array}`` (None subtrees dropped)."""
    if tree is None:
        return {}
    if isinstance(tree, Mapping):
        out: dict[str, np.ndarray] = {}
        for key, value in tree.items():
            if "/" in str(key):
                raise ValueError(f"a key {key!r} of the saved trees contains '/'")
            out.update(_flatten(value, f"{prefix}{key}/"))
        return out
    return {prefix.rstrip("/"): np.asarray(tree)}


def _unflatten(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in arrays.items():
        *parents, leaf = key.split("/")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


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
