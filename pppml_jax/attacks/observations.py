"""What an attacker observes of one example, as a function of that example: a gradient or an update.

Each observation is a small frozen dataclass with ``__call__(params, x, label) -> pytree``.
Being hashable, it is a static argument of the attack's compiled loop: the same observation
(same ``loss_fn`` object and hyper-parameters) reuses one compilation for every image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax

from pppml_jax.algorithms import fedavg_step
from pppml_jax.algorithms._tree import tree_sub
from pppml_jax.typing import Params

ExampleLossFn = Callable[[Params, jax.Array, jax.Array], jax.Array]
"""``loss_fn(params, x, label) -> scalar``: the loss of one example ``x`` (``input_shape``)."""


@dataclass(frozen=True)
class Gradient:
    """The gradient ``grad_theta loss_fn(theta, x, label)`` a client would send (FedSGD).

    Attributes:
      loss_fn: ``loss_fn(params, x, label) -> scalar``.
    """

    loss_fn: ExampleLossFn

    def __call__(self, params: Params, x: jax.Array, label: jax.Array) -> Params:
        return jax.grad(self.loss_fn)(params, x, label)


@dataclass(frozen=True)
class LocalUpdate:
    """The model difference ``theta_0 - theta_K`` after K local FedAvg SGD steps on one example.

    This is what a FedAvg client sends (``g = (theta - theta_i) / lr`` in the published code,
    up to the factor ``lr``). Simulating it for a dummy input and matching the observed one
    is the update-inversion attack of Geiping et al. 2020 ("Inverting gradients", section 5).

    Attributes:
      loss_fn: ``loss_fn(params, x, label) -> scalar``.
      local_steps: K >= 1 SGD steps, each on the same example (unrolled).
      lr: the client's step size (public in FedAvg).
    """

    loss_fn: ExampleLossFn
    local_steps: int
    lr: float

    def __post_init__(self) -> None:
        if not isinstance(self.local_steps, int) or self.local_steps < 1:
            raise ValueError(f"local_steps={self.local_steps!r} must be a positive int")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r} must be positive (the client's SGD step size)")

    def __call__(self, params: Params, x: jax.Array, label: jax.Array) -> Params:
        def batch_loss(p: Params, batch: dict[str, Any]) -> jax.Array:
            return self.loss_fn(p, batch["x"], batch["label"])

        batch = {"x": x, "label": label}
        current = params
        for _ in range(self.local_steps):  # unrolled: a rolled scan is slow for convolutions
            current = fedavg_step(batch_loss, current, batch, lr=self.lr)
        return tree_sub(params, current)
