"""Small pytree arithmetic used by the local steps (axpy and friends), dtype-preserving."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pppml_jax.typing import Params


def tree_axpy(a: float | jax.Array, x: Params, y: Params) -> Params:
    """Returns ``a * x + y`` leaf by leaf, cast back to each leaf of ``y``'s dtype."""
    return jax.tree.map(lambda xi, yi: (yi + a * xi).astype(yi.dtype), x, y)


def tree_sub(x: Params, y: Params) -> Params:
    """Returns ``x - y`` leaf by leaf."""
    return jax.tree.map(jnp.subtract, x, y)


def tree_vdot(x: Params, y: Params) -> jax.Array:
    """Returns the inner product ``<x, y>`` over all leaves, as a float32 scalar."""
    parts = jax.tree.leaves(
        jax.tree.map(lambda a, b: jnp.vdot(a.astype(jnp.float32), b.astype(jnp.float32)), x, y)
    )
    return sum(parts, jnp.zeros((), jnp.float32))
