"""iDLG label inference: the true class is the only negative row of the last layer's gradient."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pppml_jax.typing import Params


def _leaves_in_call_order(tree: Any, path: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """Leaves of ``tree`` as ``(path, leaf)``, dicts walked in insertion order.

    Flax creates submodule parameters in the order the layers are called, so the last entry of
    this list is the output layer's last parameter; ``jax.tree_util`` would sort dict keys
    instead (``"Dense_0"`` before ``"conv"``), which says nothing about depth.
    """
    if isinstance(tree, Mapping):
        out = []
        for key, value in tree.items():
            out += _leaves_in_call_order(value, (*path, str(key)))
        return out
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "shape"):
        out = []
        for index, value in enumerate(tree):
            out += _leaves_in_call_order(value, (*path, str(index)))
        return out
    return [("/".join(path), tree)]


def last_layer_kernel(grads: Params, *, path: str | None = None) -> jax.Array:
    """The weight gradient of the output layer, ``[features, num_classes]``.

    Args:
      grads: a gradient (or model update) pytree shaped like Flax ``params``.
      path: ``"/"``-separated key path of the kernel (e.g. ``"Dense_0/kernel"``); by default
        the last 2-D leaf in the order the layers were created (dicts in insertion order).

    Returns:
      The kernel gradient as a ``[features, num_classes]`` array (Flax's ``Dense`` layout:
      inputs on axis 0, one column per class).

    Raises:
      ValueError: no 2-D leaf exists, or ``path`` names no 2-D leaf.
    """
    leaves = _leaves_in_call_order(grads)
    if path is not None:
        found = [leaf for name, leaf in leaves if name == path]
        if not found or jnp.ndim(found[0]) != 2:
            names = [name for name, leaf in leaves if jnp.ndim(leaf) == 2]
            raise ValueError(f"path={path!r} names no 2-D leaf of grads; 2-D leaves: {names}")
        return jnp.asarray(found[0])
    kernels = [leaf for _, leaf in leaves if jnp.ndim(leaf) == 2]
    if not kernels:
        shapes = [jnp.shape(leaf) for _, leaf in leaves]
        raise ValueError(
            f"grads has no 2-D leaf (leaf shapes {shapes}); iDLG needs the gradient of a dense "
            "output layer, or pass path= to name it"
        )
    return jnp.asarray(kernels[-1])


def class_scores(grads: Params, *, path: str | None = None) -> jax.Array:
    """``[num_classes]`` sums of the output kernel's gradient over its inputs (one per class).

    For one example with cross-entropy, column c of the kernel gradient is
    ``h * (softmax_c - y_c)`` where ``h`` is the layer's input; when ``h >= 0`` (sigmoid or ReLU
    features) the column of the true class is the only one with a negative sum.
    """
    kernel = last_layer_kernel(grads, path=path)
    return jnp.sum(kernel.astype(jnp.float32), axis=0)


def infer_label(observed_grads: Params, *, path: str | None = None) -> int:
    """iDLG's sign rule: the class whose output-kernel gradient column sums to a negative value.

    Exact for one training example under softmax cross-entropy when the output layer's input is
    non-negative (sigmoid, ReLU), whatever the weights: every other column sums to a positive
    value. It also holds for a model difference ``theta_0 - theta_K`` after K SGD steps on that
    example (a positive sum of such gradients). With several examples or masked / encrypted
    views the rule returns the most negative column, which need not mean anything.

    Args:
      observed_grads: gradient pytree shaped like the model's params (Flax layout); the output
        layer's kernel is ``[features, num_classes]``.
      path: key path of the output kernel (default: the last 2-D leaf, see
        :func:`last_layer_kernel`).

    Returns:
      The inferred class index (a Python int).

    Raises:
      ValueError: no output kernel can be found.

    References:
      B. Zhao, K. R. Mopuri, H. Bilen, "iDLG: Improved Deep Leakage from Gradients",
      arXiv:2001.02610, 2020.

    Example::

        grads = jax.grad(loss_fn)(params, x, 3)
        assert infer_label(grads) == 3
    """
    scores = np.asarray(class_scores(observed_grads, path=path))
    return int(np.argmin(scores))
