"""The federation's hyper-parameters as one frozen, validated dataclass."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import optax

from pppml_jax.algorithms.base import Algorithm
from pppml_jax.algorithms.meta_gradient import VARIANTS
from pppml_jax.algorithms.registry import BUILTINS

ALGORITHMS = BUILTINS
EXECUTIONS = ("auto", "vmap", "loop")
MODEL_STATE_MODES = ("local", "average")
DATA_PLACEMENTS = ("auto", "device", "host")
STEP_PROGRAMS_ABOVE = 50_000
"""Parameters above which loop execution compiles a program per local step by default."""


@dataclasses.dataclass(frozen=True)
class FederationConfig:
    """Everything that defines a federated run apart from the model, loss and data.

    Attributes:
      algorithm: an :class:`~pppml_jax.algorithms.Algorithm` value
        (``pj.algorithms.ditto(lam=0.1)``) or the name of a built-in ("local", "fedavg",
        "perfedavg", "pppml", "fedprox", ...; ``pj.algorithms.BUILTINS``). A name is built
        with its defaults ("fedprox" and "ditto" have a required option, ``mu`` and ``lam``:
        pass a value such as ``pj.algorithms.fedprox(mu=0.01)``); "perfedavg" and "pppml"
        take ``variant`` and ``delta`` from here.
      rounds: number of communication rounds.
      local_steps: tau, local optimizer steps per client per round.
      batch_size: examples per batch.
      lr: local step size of "local" and "fedavg" (and the default of alpha and beta).
      alpha: Per-FedAvg's inner step and the personalization step size (default: lr).
      beta: Per-FedAvg's outer step size (default: lr).
      variant: Per-FedAvg variant, "fo" | "hf" | "exact".
      delta: finite-difference radius of the "hf" variant.
      local_optimizer: "sgd", "adam" or an ``optax.GradientTransformation`` used as given. A
        name is built with step size lr ("local", "fedavg") or beta ("perfedavg", "pppml").
      server_lr: step size of the default server optimizer ``optax.sgd(server_lr)`` applied to
        the pseudo-gradient ``theta - mean_i theta_i``; 1.0 makes the new model the weighted mean.
      server_optimizer: an optax transformation replacing the default (then server_lr is unused).
      clients_per_round: clients sampled per round: None (all), an int, or a fraction in (0, 1].
      execution: "vmap" (all sampled clients in one program), "loop" (a Python loop over one
        jitted client function) or "auto" (loop on CPU, vmap elsewhere). Same results.
      unroll: unroll the local steps in the compiled program (True) or use a rolled loop.
      step_programs: compile one program per local step (and per personalization step), called
        from a Python loop, instead of one program for all of a client's steps. Compile time
        of unrolled steps grows faster than their number on XLA:CPU (a 4-step U-Net update:
        72 s against 16 s for one step), while each extra dispatch costs a few hundred
        microseconds (a 9k-parameter CNN: 20% slower rounds than one program per client).
        None: in loop execution, True for models of more than ``STEP_PROGRAMS_ABOVE``
        parameters (compile time dominates) and False below (dispatch dominates); False for
        vmap (one fused program per round).
      model_state_mode: what happens to model state such as BatchNorm statistics: "local" (each
        client keeps its own, never sent; as in the paper and FedBN) or "average" (aggregated
        with the same weights as the parameters).
      batch_rng: the name of an entry added to every batch drawn, holding a fresh PRNG key's
        data (``[2]`` uint32), for losses that need randomness (dropout); None: no entry.
      personalize_steps: SGD steps of size alpha on the client's training data before the
        personalized evaluation.
      eval_every: evaluate every this many rounds (and always after the last).
      eval_batch_size: test examples evaluated per chunk.
      chunk_size: clients trained per compiled program in vmap execution (None: every sampled
        client at once). Updates are summed chunk by chunk, so memory is bounded by the chunk,
        not the federation; rounded up to a multiple of the number of devices.
      devices: devices the clients axis is sharded over in vmap execution (None: all devices of
        all processes; 1: no sharding).
      data_placement: "device" (every client's data stays on the device(s)), "host" (only the
        chunk being trained is sent, each round) or "auto" (device up to
        ``device_data_limit_mb`` of training and test data, host beyond).
      device_data_limit_mb: the "auto" placement's threshold in MiB.
      secure: options of ``pppml_jax.secure.cyclic_aggregate`` ({"backend": "bfv", ...}); when
        given, every round's aggregation goes through the ring. "pppml" without it uses
        ``DEFAULT_SECURE``.
      seed: the one seed every random choice of the run derives from.
    """

    algorithm: str | Algorithm = "fedavg"
    rounds: int = 10
    local_steps: int = 5
    batch_size: int = 16
    lr: float = 0.05
    alpha: float | None = None
    beta: float | None = None
    variant: str = "fo"
    delta: float = 1e-3
    local_optimizer: Any = "sgd"
    server_lr: float = 1.0
    server_optimizer: optax.GradientTransformation | None = None
    clients_per_round: int | float | None = None
    execution: str = "auto"
    unroll: bool = True
    step_programs: bool | None = None
    model_state_mode: str = "local"
    batch_rng: str | None = None
    personalize_steps: int = 1
    eval_every: int = 1
    eval_batch_size: int = 256
    chunk_size: int | None = None
    devices: int | None = None
    data_placement: str = "auto"
    device_data_limit_mb: float = 1024.0
    secure: Mapping[str, Any] | None = None
    seed: int = 0

    def __post_init__(self):
        def need(cond: bool, message: str) -> None:
            if not cond:
                raise ValueError(message)

        def is_int(value) -> bool:  # a bool is not a count
            return isinstance(value, int) and not isinstance(value, bool)

        need(
            isinstance(self.algorithm, Algorithm)
            or (isinstance(self.algorithm, str) and self.algorithm in BUILTINS),
            f"algorithm={self.algorithm!r} is unknown; use an Algorithm value "
            f"(pj.algorithms.fedavg(), ...) or one of {', '.join(BUILTINS)}",
        )
        need(
            self.execution in EXECUTIONS,
            f"execution={self.execution!r} is unknown; use one of {', '.join(EXECUTIONS)}",
        )
        need(
            self.variant in VARIANTS,
            f"variant={self.variant!r} is unknown; use one of {', '.join(VARIANTS)}",
        )
        need(
            self.model_state_mode in MODEL_STATE_MODES,
            f"model_state_mode={self.model_state_mode!r} is unknown; use one of "
            f"{', '.join(MODEL_STATE_MODES)}",
        )
        need(
            self.data_placement in DATA_PLACEMENTS,
            f"data_placement={self.data_placement!r} is unknown; use one of "
            f"{', '.join(DATA_PLACEMENTS)}",
        )
        for name in ("chunk_size", "devices"):
            value = getattr(self, name)
            need(
                value is None or (is_int(value) and value >= 1),
                f"{name}={value!r} must be None or an integer >= 1",
            )
        for name in ("rounds", "local_steps", "batch_size", "eval_every", "eval_batch_size"):
            value = getattr(self, name)
            need(is_int(value) and value >= 1, f"{name}={value!r} must be an integer >= 1")
        need(
            is_int(self.personalize_steps) and self.personalize_steps >= 0,
            f"personalize_steps={self.personalize_steps!r} must be an integer >= 0",
        )
        for name in ("lr", "alpha", "beta", "delta", "server_lr"):
            value = getattr(self, name)
            need(
                value is None
                or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0),
                f"{name}={value!r} must be a number > 0",
            )
        cpr = self.clients_per_round
        need(
            cpr is None or (is_int(cpr) and cpr >= 1) or (isinstance(cpr, float) and 0 < cpr <= 1),
            f"clients_per_round={cpr!r} must be None, an int >= 1 or a fraction in (0, 1]",
        )
        need(
            isinstance(self.local_optimizer, optax.GradientTransformation)
            or self.local_optimizer in ("sgd", "adam"),
            f"local_optimizer={self.local_optimizer!r} must be 'sgd', 'adam' or an "
            "optax.GradientTransformation",
        )
        need(
            self.secure is None or isinstance(self.secure, Mapping),
            f"secure={self.secure!r} must be None or a dict of cyclic_aggregate options",
        )
        need(is_int(self.seed), f"seed={self.seed!r} must be an int")

    @property
    def algorithm_name(self) -> str:
        """The algorithm's name (of a value or a built-in's name)."""
        return self.algorithm if isinstance(self.algorithm, str) else self.algorithm.name

    @property
    def inner_lr(self) -> float:
        """alpha: Per-FedAvg's inner step and the personalization step size."""
        return float(self.alpha if self.alpha is not None else self.lr)

    def replace(self, **changes: Any) -> FederationConfig:
        return dataclasses.replace(self, **changes)
