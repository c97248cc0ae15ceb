"""Gradient-matching distances and the total-variation image prior, pure JAX."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pppml_jax.algorithms._tree import tree_vdot
from pppml_jax.typing import Params

DISTANCES = ("l2", "cosine")
"""Names accepted by :func:`gradient_distance`."""

_TINY = 1e-30


def gradient_distance(candidate: Params, observed: Params, *, kind: str = "l2") -> jax.Array:
    """How far a candidate gradient is from the observed one (0 when equal).

    Args:
      candidate: pytree of arrays (the dummy input's gradient or simulated update).
      observed: pytree of the same structure and shapes (what the attacker saw).
      kind: ``"l2"``: ``||c - o||^2 / ||o||^2`` (DLG / iDLG's squared distance, divided by a
        constant so that values are scale-free; the minimiser is the same); ``"cosine"``:
        ``1 - <c, o> / (||c|| ||o||)`` (Geiping et al. 2020), blind to the update's scale.

    Returns:
      A float32 scalar.

    Raises:
      ValueError: unknown ``kind``.
    """
    if kind not in DISTANCES:
        raise ValueError(f"kind={kind!r} is not one of {DISTANCES}")
    oo = tree_vdot(observed, observed)
    if kind == "l2":
        diff = jax.tree.map(lambda c, o: c.astype(jnp.float32) - o.astype(jnp.float32), candidate,
                            observed)  # fmt: skip
        return tree_vdot(diff, diff) / jnp.maximum(oo, _TINY)
    cc = tree_vdot(candidate, candidate)
    co = tree_vdot(candidate, observed)
    return 1.0 - co / jnp.sqrt(jnp.maximum(cc * oo, _TINY))


def total_variation(x: jax.Array, *, eps: float = 1e-3) -> jax.Array:
    """Smoothed anisotropic total variation of a channels-last image, in pixel units.

    ``mean sqrt(dh^2 + eps^2) + mean sqrt(dw^2 + eps^2)`` over the vertical and horizontal
    neighbour differences ``dh``, ``dw``; the ``eps`` smoothing keeps it differentiable, which
    L-BFGS needs.

    Args:
      x: ``[..., H, W, C]`` image(s), ``H, W >= 2``.
      eps: smoothing, in pixel-value units.

    Returns:
      A float32 scalar.
    """
    dh = x[..., 1:, :, :] - x[..., :-1, :, :]
    dw = x[..., :, 1:, :] - x[..., :, :-1, :]
    return jnp.mean(jnp.sqrt(dh**2 + eps**2)) + jnp.mean(jnp.sqrt(dw**2 + eps**2))
