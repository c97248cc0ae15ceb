"""What a run leaves: typed round records, the History (and its JSON form), DivergenceError."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pppml_jax.federation.config import FederationConfig
from pppml_jax.federation.state import FederationState
from pppml_jax.federation.types import RoundError
from pppml_jax.typing import Params

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
