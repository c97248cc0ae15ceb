"""Splitting a model's parameters by path into a shared part and a personal part.

Partial-sharing algorithms (FedBN, FedPer, FedRep) keep some parameters on each client and
average the rest. A parameter is named by its *path*, the keys from the root of the params
pytree joined by "/": in a Flax model ``{"Dense_0": {"kernel", "bias"}, "BatchNorm_0":
{"scale", "bias"}, "Dense_1": {...}}`` the paths are ``"Dense_0/kernel"``,
``"BatchNorm_0/scale"``, ... A :data:`PathSpec` chooses the personal parameters:

* a string: the paths containing it (``"Dense_1"``, ``"BatchNorm"``);
* a list or tuple of strings: the paths containing any of them;
* a callable ``path -> bool``.

:func:`split` returns two trees of the params' structure, each holding ``None`` where the
other holds the array, and :func:`merge` puts them back together::

    shared, personal = split(params, path_predicate("Dense_1"))
    assert merge(shared, personal) == params   # leaf for leaf
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from pppml_jax.typing import Params

PathSpec = str | Sequence[str] | Callable[[str], bool]
"""Which parameters are personal: a substring, a list of substrings or ``path -> bool``."""

Predicate = Callable[[str], bool]


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_string(key_path: Sequence[Any]) -> str:
    """``"Dense_1/kernel"`` from a ``jax.tree_util`` key path (dict keys, attributes, indices)."""
    return "/".join(_key_name(k) for k in key_path)


def paths(params: Params) -> list[str]:
    """The path of every array leaf of ``params``, in ``jax.tree`` leaf order."""
    return [path_string(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def path_predicate(spec: PathSpec, *, argument: str = "personal") -> Predicate:
    """A ``path -> bool`` from a :data:`PathSpec`.

    Args:
      spec: a substring, a list/tuple of substrings, or a callable ``path -> bool``.
      argument: the option's name, for the error message.

    Raises:
      ValueError: naming ``argument`` if ``spec`` is none of the above.
    """
    if callable(spec):
        return spec
    if isinstance(spec, str):
        spec = (spec,)
    if isinstance(spec, Sequence) and len(spec) > 0 and all(isinstance(s, str) and s for s in spec):
        parts = tuple(spec)
        return lambda path: any(p in path for p in parts)
    raise ValueError(
        f"{argument}={spec!r} must be a non-empty substring of parameter paths (like "
        f"'Dense_1'), a list of them, or a callable path -> bool"
    )


def describe(spec: PathSpec | None) -> Any:
    """A JSON-able record of a :data:`PathSpec` for ``Algorithm.options``."""
    if spec is None or isinstance(spec, str):
        return spec
    if callable(spec):
        return f"<callable {getattr(spec, '__qualname__', type(spec).__name__)}>"
    return list(spec)


def split(params: Params, predicate: Predicate) -> tuple[Params, Params]:
    """``(shared, personal)``: ``params`` with None for the personal, resp. shared, leaves.

    Both have the structure of ``params`` (None is an empty subtree for ``jax.tree``
    functions, so the arrays of either part can be mapped, averaged and optimised alone).
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    mine = [bool(predicate(path_string(kp))) for kp, _ in flat]
    leaves = [leaf for _, leaf in flat]
    shared = [None if m else x for m, x in zip(mine, leaves, strict=True)]
    personal = [x if m else None for m, x in zip(mine, leaves, strict=True)]
    return jax.tree.unflatten(treedef, shared), jax.tree.unflatten(treedef, personal)


def merge(shared: Params, personal: Params) -> Params:
    """The inverse of :func:`split`: each leaf from whichever part holds it."""
    return jax.tree.map(
        lambda s, p: p if s is None else s, shared, personal, is_leaf=lambda x: x is None
    )


def natural_key(name: str) -> tuple:
    """A sort key comparing the digit runs of ``name`` as numbers ("Dense_9" < "Dense_10")."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def last_top_level(params: Params, *, argument: str = "head") -> Predicate:
    """The paths under the top-level key of a params mapping that sorts last (default head).

    ``jax.tree`` functions rebuild every dict in sorted key order, so a model's creation
    order is lost after its first update and cannot define the head. Instead the head is the
    top-level key that sorts last with digit runs compared as numbers: for a Flax model with
    auto-named submodules such as ``Conv_0, ..., BatchNorm_0, Dense_0, Dense_1`` that is the
    last Dense layer (``"Dense_1"``); name the head explicitly when that is not the one.

    Raises:
      ValueError: naming ``argument`` if ``params`` is not a non-empty mapping.
    """
    if not isinstance(params, Mapping) or not params:
        raise ValueError(
            f"{argument}=None picks the last top-level key of the params mapping, but the "
            f"params are a {type(params).__name__}; pass {argument}='<path substring>' or a "
            "callable path -> bool"
        )
    last = max((str(k) for k in params), key=natural_key)
    return lambda path: path == last or path.startswith(last + "/")
