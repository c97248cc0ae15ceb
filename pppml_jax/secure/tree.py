"""Pytree plumbing for secure aggregation: validated flattening, key paths, leaf selection.

A leaf is named by its key path joined with ``/``: dict keys and attribute names as they are,
sequence indices as decimal numbers. The Flax parameters
``{"params": {"Conv_0": {"kernel": k, "bias": b}}}`` have the leaves ``params/Conv_0/bias``
and ``params/Conv_0/kernel``; a list ``[w, b]`` has the leaves ``0`` and ``1``. Selective
encryption patterns are matched against these names with :func:`fnmatch.fnmatchcase`.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import ml_dtypes
import numpy as np

from pppml_jax.secure.errors import (
    InvalidOptionError,
    InvalidUpdateError,
    NonFiniteUpdateError,
    StructureMismatchError,
)


def is_real_dtype(dtype: np.dtype) -> bool:
    """True for real floating dtypes, including ``ml_dtypes`` floats such as bfloat16.

    Complex, integer, boolean and object dtypes are not: a weighted mean of integers is not an
    integer (and would come back in another dtype), and a complex leaf would lose its
    imaginary part.
    """
    if dtype.kind == "f":
        return True
    if dtype.kind in "biucOSUmM":
        return False
    try:
        ml_dtypes.finfo(dtype)
    except (TypeError, ValueError):
        return False
    return True


def float_eps(dtype: np.dtype) -> float:
    """Machine epsilon of a float dtype (numpy or ``ml_dtypes``)."""
    try:
        return float(np.finfo(dtype).eps)
    except (TypeError, ValueError):
        return float(ml_dtypes.finfo(dtype).eps)


def key_path_name(path: Sequence[Any]) -> str:
    """Returns the ``/``-joined name of a ``jax.tree_util`` key path (see the module doc)."""
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:  # pragma: no cover - future key types
            parts.append(str(key))
    return "/".join(parts)


@dataclass(frozen=True)
class FlatUpdates:
    """Client updates flattened to leaves, after validation.

    Attributes:
      names: ``[L]`` leaf names (key paths, see the module doc), in ``jax`` flatten order.
      shapes: ``[L]`` leaf shapes.
      dtypes: ``[L]`` leaf dtypes of the first client (the aggregate is cast back to them).
      treedef: the common tree structure.
      leaves: ``[n][L]`` float64 arrays, flattened to 1-D: ``leaves[i][l]`` is client i's leaf l.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]
    treedef: Any
    leaves: tuple[tuple[np.ndarray, ...], ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        """``[L]`` number of values in each leaf."""
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def num_params(self) -> int:
        """Total number of values in one update."""
        return int(sum(self.sizes))

    def unflatten(self, flat_leaves: Sequence[np.ndarray]) -> Any:
        """Rebuilds a pytree from 1-D leaves, reshaped and cast to the input dtypes."""
        out = [
            np.asarray(v).reshape(shape).astype(dtype, copy=False)
            for v, shape, dtype in zip(flat_leaves, self.shapes, self.dtypes, strict=True)
        ]
        return jax.tree_util.tree_unflatten(self.treedef, out)


def _dtype_error(i: int, name: str, dtype: np.dtype) -> InvalidUpdateError:
    if dtype.kind in "iu":
        hint = "cast it to a float dtype, or leave integer state (step counters) out of updates"
    elif dtype.kind == "c":
        hint = "split it into real and imaginary leaves"
    else:
        hint = "only real floating-point arrays can be averaged"
    return InvalidUpdateError(
        f"updates[{i}] leaf {name!r} has dtype {dtype}; refusing to aggregate it ({hint})"
    )


def flatten_updates(updates: Sequence[Any]) -> FlatUpdates:
    """Validates client updates and flattens them to float64 leaves.

    Args:
      updates: list (one per client) of pytrees with one structure and the same leaf shapes;
        leaves are real floating-point arrays (numpy or jax; float16/32/64, bfloat16...).

    Returns:
      A :class:`FlatUpdates`. The inputs are not modified (leaves are copied to float64).

    Raises:
      InvalidUpdateError: ``updates`` is empty, holds no values at all, or a leaf is not a
        real floating-point array (integer, complex and boolean leaves are refused).
      StructureMismatchError: structures or shapes differ between clients (names the client
        and leaf).
      NonFiniteUpdateError: a leaf holds NaN or an infinity (names the client, leaf, count).
    """
    if isinstance(updates, (str, bytes)) or not isinstance(updates, Sequence):
        raise InvalidUpdateError(
            f"updates must be a list of pytrees (one per client), got {type(updates).__name__}"
        )
    if len(updates) == 0:
        raise InvalidUpdateError("updates is empty: pass one pytree per client")
    ref_paths, treedef = jax.tree_util.tree_flatten_with_path(updates[0])
    if not ref_paths:
        raise InvalidUpdateError("updates[0] has no array leaves: nothing to aggregate")
    names = tuple(key_path_name(p) for p, _ in ref_paths)
    shapes = tuple(tuple(np.shape(leaf)) for _, leaf in ref_paths)
    dtypes = []
    for name, (_, leaf) in zip(names, ref_paths, strict=True):
        dtype = np.asarray(leaf).dtype
        if not is_real_dtype(dtype):
            raise _dtype_error(0, name, dtype)
        dtypes.append(dtype)
    if sum(int(np.prod(s, dtype=np.int64)) for s in shapes) == 0:
        raise InvalidUpdateError(
            f"every leaf of the updates is empty (shapes {list(shapes)[:4]}...): nothing to "
            "aggregate"
        )
    all_leaves = []
    for i, update in enumerate(updates):
        leaves, tdef = jax.tree_util.tree_flatten(update)
        if tdef != treedef:
            raise StructureMismatchError(
                f"updates[{i}] has tree structure {tdef}, but updates[0] has {treedef}; "
                "every client must send the same pytree structure"
            )
        flat = []
        for name, shape, leaf in zip(names, shapes, leaves, strict=True):
            arr = np.asarray(leaf)
            if arr.shape != shape:
                raise StructureMismatchError(
                    f"updates[{i}] leaf {name!r} has shape {arr.shape}, but updates[0] has "
                    f"{shape}; every client must send leaves of the same shapes"
                )
            if not is_real_dtype(arr.dtype):
                raise _dtype_error(i, name, arr.dtype)
            vec = arr.astype(np.float64).reshape(-1)
            bad = int(vec.size - np.count_nonzero(np.isfinite(vec)))
            if bad:
                raise NonFiniteUpdateError(
                    f"updates[{i}] leaf {name!r} holds {bad} NaN or infinite value(s); "
                    "refusing to aggregate (fix the client's training step)"
                )
            flat.append(vec)
        all_leaves.append(tuple(flat))
    return FlatUpdates(names, shapes, tuple(dtypes), treedef, tuple(all_leaves))


def _natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded numbers numerically (``Conv_2`` before ``Conv_10``)."""
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


def _layer(name: str) -> str:
    return name.rsplit("/", 1)[0] if "/" in name else name


def first_and_last_layers(
    names: Sequence[str], shapes: Sequence[tuple[int, ...]] | None = None
) -> tuple[bool, ...]:
    """Marks the leaves of the first and last layer, in natural order of the layer names.

    A layer is a leaf's name without its last component (``params/Conv_0/kernel`` belongs to
    ``params/Conv_0``). With ``shapes``, only layers that own a weight matrix or kernel (a
    leaf of rank >= 2) count, so normalisation layers are skipped. These are the layers
    gradient inversion relies on most (the input layer for the image, the output layer for
    the label). A heuristic: pass explicit patterns when a model's layer names do not sort in
    network order.
    """
    layers = {_layer(n) for n in names}
    if shapes is not None:
        weighted = {_layer(n) for n, s in zip(names, shapes, strict=True) if len(s) >= 2}
        layers = weighted or layers
    ordered = sorted(layers, key=_natural_key)
    chosen = {ordered[0], ordered[-1]}
    return tuple(_layer(n) in chosen for n in names)


def select_leaves(
    names: Sequence[str],
    shapes: Sequence[tuple[int, ...]],
    encrypt: str | Sequence[str] | None,
    *,
    auto_max_values: int,
) -> tuple[bool, ...]:
    """Decides which leaves are encrypted; the others travel masked only.

    Args:
      names: ``[L]`` leaf names.
      shapes: ``[L]`` leaf shapes.
      encrypt: ``None`` (every leaf), ``"auto"`` (every leaf if the update has at most
        ``auto_max_values`` values, else :func:`first_and_last_layers`), or a sequence of
        :mod:`fnmatch` patterns matched against leaf names (an empty sequence encrypts
        nothing).
      auto_max_values: threshold of the ``"auto"`` rule.

    Returns:
      ``[L]`` booleans, True where the leaf is encrypted.

    Raises:
      InvalidOptionError: ``encrypt`` is of the wrong type, or a pattern matches no leaf.
    """
    if encrypt is None:
        return tuple(True for _ in names)
    if isinstance(encrypt, str):
        if encrypt != "auto":
            raise InvalidOptionError(
                f"encrypt={encrypt!r}: pass None (all), 'auto', or a list of name patterns "
                "such as ['params/Conv_0/*']"
            )
        if sum(int(np.prod(s, dtype=np.int64)) for s in shapes) <= auto_max_values:
            return tuple(True for _ in names)
        return first_and_last_layers(names, shapes)
    patterns = list(encrypt)
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise InvalidOptionError(f"encrypt patterns must be strings, got {pattern!r}")
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise InvalidOptionError(
                f"encrypt pattern {pattern!r} matches no leaf; leaf names are "
                f"{list(names)[:8]}{' ...' if len(names) > 8 else ''}"
            )
    return tuple(any(fnmatch.fnmatchcase(n, p) for p in patterns) for n in names)


@dataclass(frozen=True)
class Layout:
    """Where each selected leaf lives in a channel vector.

    Attributes:
      leaf_ids: indices (into the flat leaf list) of the leaves in this channel.
      offsets: start of each of those leaves in the channel vector.
      length: length of the channel vector, padding included (a multiple of the block size).
    """

    leaf_ids: tuple[int, ...]
    offsets: tuple[int, ...]
    length: int

    @staticmethod
    def build(
        leaf_ids: Sequence[int], sizes: Sequence[int], *, block: int, per_leaf: bool
    ) -> Layout:
        """Lays leaves out back to back (``per_leaf=False``) or each from a block start."""
        offsets, pos = [], 0
        for lid in leaf_ids:
            offsets.append(pos)
            pos += sizes[lid]
            if per_leaf:
                pos = -(-pos // block) * block
        length = -(-pos // block) * block if pos else 0
        return Layout(tuple(leaf_ids), tuple(offsets), length)

    def gather(self, leaves: Sequence[np.ndarray]) -> np.ndarray:
        """Returns the ``[length]`` float64 channel vector of one client (zeros in padding)."""
        out = np.zeros(self.length, np.float64)
        for lid, off in zip(self.leaf_ids, self.offsets, strict=True):
            out[off : off + leaves[lid].size] = leaves[lid]
        return out

    def scatter(self, vector: np.ndarray, sizes: Sequence[int], into: list[Any]) -> None:
        """Writes this channel's leaves from ``vector`` into ``into[leaf_id]``."""
        for lid, off in zip(self.leaf_ids, self.offsets, strict=True):
            into[lid] = vector[off : off + sizes[lid]]
