"""Per-FedAvg (first order, Hessian-free, exact) and PPPML-HMI as algorithm values.

References:
  Fallah, Mokhtari, Ozdaglar, "Personalized Federated Learning with Theoretical Guarantees: A
  Model-Agnostic Meta-Learning Approach", NeurIPS 2020, https://arxiv.org/abs/2002.07948
  Zhou et al., "Personalized and privacy-preserving federated heterogeneous medical image
  analysis with PPPML-HMI", Computers in Biology and Medicine 169 (2024),
  https://arxiv.org/abs/2302.11571
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pppml_jax.algorithms.base import Algorithm
from pppml_jax.algorithms.meta_gradient import check_variant, meta_direction
from pppml_jax.algorithms.standard import check_positive, one_model

DEFAULT_SECURE: Mapping[str, Any] = {"backend": "bfv"}
"""The secure-aggregation options of ``pppml`` when the run gives none."""


def _check(alpha, beta, variant, delta) -> None:
    check_variant(variant)
    check_positive("alpha", alpha)
    check_positive("beta", beta)
    check_positive("delta", delta, allow_none=False)


def _meta_direction(variant: str):
    def direction(ctx, params, model_state, batches, t, broadcast, client_state):
        del t, broadcast, client_state
        return meta_direction(
            ctx.loss_fn,
            params,
            model_state,
            batches,
            alpha=ctx.hp["alpha"],
            variant=variant,
            delta=ctx.hp["delta"],
        )

    return direction


def perfedavg(
    *,
    alpha: float | None = None,
    beta: float | None = None,
    variant: str = "fo",
    delta: float = 1e-3,
) -> Algorithm:
    """Per-FedAvg: each local step follows the meta-gradient of ``f_i(w - alpha grad f_i(w))``.

    One local step with independent batches D, D', D''::

        w~ = w - alpha grad f(w; D);  g = grad f(w~; D')
        fo: g    hf: g - alpha [grad f(w + delta g; D'') - grad f(w - delta g; D'')] / (2 delta)
        exact: (I - alpha Hess f(w; D'')) g

    and the local optimizer (``optax.sgd(beta)`` as published) steps along it. The server
    averages like FedAvg; a client personalizes with SGD steps of size ``alpha``.

    Args:
      alpha: the inner step and the personalization step (None: the run's ``alpha``).
      beta: the outer step, the local optimizer's step size (None: the run's ``beta``).
      variant: "fo", "hf" or "exact".
      delta: the finite-difference radius of "hf".
    """
    _check(alpha, beta, variant, delta)
    return one_model(
        "perfedavg",
        _meta_direction(variant),
        step_size="beta",
        hparams={"alpha": alpha, "beta": beta, "delta": float(delta)},
        batches_per_step=2 if variant == "fo" else 3,
        options={"variant": variant},
    )


def pppml(
    *,
    alpha: float | None = None,
    beta: float | None = None,
    variant: str = "fo",
    delta: float = 1e-3,
    secure: Mapping[str, Any] | None = None,
) -> Algorithm:
    """PPPML-HMI: Per-FedAvg whose aggregation goes around the cyclic secure ring under HE.

    Identical to :func:`perfedavg` up to the ring's quantisation error.

    Args:
      alpha, beta, variant, delta: as :func:`perfedavg`.
      secure: ``cyclic_aggregate`` options used when the run gives none (default BFV).
    """
    _check(alpha, beta, variant, delta)
    if secure is not None and not isinstance(secure, Mapping):
        raise ValueError(f"secure={secure!r} must be a dict of cyclic_aggregate options")
    return perfedavg(alpha=alpha, beta=beta, variant=variant, delta=delta)._replace(
        name="pppml", secure=dict(secure if secure is not None else DEFAULT_SECURE)
    )
