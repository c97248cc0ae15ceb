"""The privacy experiment's config: every key with its default, and the merge of a user's config.

``pppml attack`` reads a YAML file with the keys of :data:`DEFAULTS`; missing keys take their
defaults and unknown keys are refused with their dotted path.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "model": {"num_classes": 2, "activation": "sigmoid", "init_range": 0.5},
    "attack": {
        "steps": 2000,
        "restarts": 1,
        "tol": 1e-8,
        "memory_size": 100,
        "patience": 20,
        "tv_weight": 0.0,
        "distance": "l2",
        "init": "uniform",
        "solver": "lbfgs",
        "max_move": 0.5,
    },
    "data": {
        "crop_size": 32,
        "window_hu": [-1000.0, 400.0],
        "synthetic": {"profiles": "quickstart", "image_size": 64},
        "real_ct": {"root": None, "download": True, "slice_size": 128},
    },
    "reference": {"datasets": ["synthetic", "real_ct"], "images": 20},
    "local_update": {"dataset": "synthetic", "images": 4, "local_steps": 5, "lr": 0.1},
    "views": {
        "dataset": "synthetic",
        "clients": 3,
        "trials": 4,
        "weights": None,
        "backend": "bfv",
        "backend_options": {},
        "clip": 4.0,
        "two_party": True,
    },
    "noise_floor": {"draws": 64},
}
"""Every config key and its default (``pppml attack`` reads YAML with these keys)."""

DATASETS = ("synthetic", "real_ct")
"""The data sets crops can come from."""

_FREE_FORM = {("views", "backend_options")}


def merge_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Returns :data:`DEFAULTS` updated by ``config`` (nested), refusing unknown keys.

    Raises:
      ValueError: a key that :data:`DEFAULTS` does not have (named with its dotted path).
    """

    def merge(base: dict[str, Any], over: Mapping[str, Any], path: tuple[str, ...]):
        out = copy.deepcopy(base)
        for key, value in over.items():
            if key not in base:
                dotted = ".".join((*path, str(key)))
                raise ValueError(f"unknown config key {dotted!r}; known keys here: {sorted(base)}")
            sub = (*path, key)
            if isinstance(base[key], dict) and sub not in _FREE_FORM:
                if not isinstance(value, Mapping):
                    raise ValueError(f"config key {'.'.join(sub)!r} must be a mapping")
                out[key] = merge(base[key], value, sub)
            else:
                out[key] = copy.deepcopy(value)
        return out

    return merge(DEFAULTS, config or {}, ())


def attack_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword options of :func:`pppml_jax.attacks.idlg` from ``cfg["attack"]``."""
    a = cfg["attack"]
    return {
        "steps": int(a["steps"]),
        "restarts": int(a["restarts"]),
        "tol": float(a["tol"]),
        "memory_size": int(a["memory_size"]),
        "patience": int(a["patience"]),
        "tv_weight": float(a["tv_weight"]),
        "distance": a["distance"],
        "init": a["init"],
        "solver": a["solver"],
        "max_move": None if a["max_move"] is None else float(a["max_move"]),
    }
