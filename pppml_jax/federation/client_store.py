"""Per-client persistent state on the host: gather the sampled rows, scatter their new values.

Only the rows of the clients a program trains or evaluates move to the device; a federation
of 10,000 clients with 100 sampled per round moves 100 rows. Nothing is written in place: a
round's new rows go into copies, so a failed round leaves the old store untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np


def to_numpy(tree: Any) -> Any:
    """Every leaf as a host numpy array (restored checkpoints may hold device arrays)."""
    return jax.tree.map(np.asarray, tree)


def stack_rows(row: Any, count: int) -> Any:
    """``count`` copies of one client's state as ``[count, ...]`` host arrays."""
    return jax.tree.map(lambda x: np.repeat(np.asarray(x)[None], count, axis=0), row)


def gather(store: Any, ids: np.ndarray) -> Any:
    """Rows ``ids`` of every leaf; ids beyond the store (padding clients) read the last row."""
    if store is None:
        return None
    ids = np.asarray(ids)
    return jax.tree.map(lambda x: x[np.minimum(ids, x.shape[0] - 1)], store)


def row(store: Any, k: int) -> Any:
    """Row ``k`` of every leaf (one client's state, no leading axis)."""
    if store is None:
        return None
    return jax.tree.map(lambda x: x[k], store)


def scatter(store: Any, updates: Sequence[tuple[np.ndarray, Any]]) -> Any:
    """A copy of ``store`` with rows replaced: ``updates`` is a list of ``(ids, rows)``.

    ``rows`` has a leading axis at least ``len(ids)`` long (padding rows beyond are dropped).
    """
    if store is None or not updates:
        return store
    out = jax.tree.map(np.array, store)  # copies: the old store stays valid
    for ids, rows in updates:
        ids = np.asarray(ids)
        rows = jax.tree.map(np.asarray, rows)

        def put(dst, src, ids=ids):
            dst[ids] = src[: len(ids)]
            return dst

        out = jax.tree.map(put, out, rows)
    return out
