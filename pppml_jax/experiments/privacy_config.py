"""The bridge from the privacy experiment's typed config to the iDLG attack's options.

``pppml attack`` reads its YAML through the one config layer,
:class:`~pppml_jax.experiments.config_attack.AttackConfig` (every key, its default and its
checks live there; :func:`~pppml_jax.experiments.config_attack.attack_config` validates a
mapping); the experiment works on its ``to_dict()`` form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pppml_jax.experiments.config_attack import DATASETS

__all__ = ["DATASETS", "attack_options"]


def attack_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword options of :func:`pppml_jax.attacks.idlg` from ``cfg["attack"]``.

    ``cfg`` is the ``to_dict()`` of a validated
    :class:`~pppml_jax.experiments.config_attack.AttackConfig`.
    """
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
