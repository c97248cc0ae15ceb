"""The privacy experiment: iDLG against plain FedAvg and against every party's view of PPPML-HMI.

Three experiments, all on a LeNet with sigmoid activations (the iDLG reference network) and
32x32 single-channel CT crops, deterministic from one seed:

1. ``reference``: iDLG on the plain gradient of one image (batch of 1), for synthetic and
   real CT; label accuracy and PSNR / SSIM per image.
2. ``local_update``: the model difference a FedAvg client sends after K local SGD steps on
   its image, attacked by matching the simulated K-step update.
3. ``views``: n clients each hold one image and send its gradient; one real round of cyclic
   secure aggregation gives every party's view (:mod:`pppml_jax.attacks.views`), each
   attacked like a plain gradient; plus the two-client ring, where the other client recovers
   the victim's update exactly; plus what two coalitions isolate in a second round (the
   victim one place after the initiator, on a ring of at least 4): the relay with one
   hospital, and the victim's two ring neighbours, each with pairwise masks on and off.

:func:`evaluate` takes a config (an :class:`~pppml_jax.experiments.config_attack.AttackConfig`,
the one config layer: every key, its default and its checks; or a mapping it validates) and
returns a :class:`PrivacyReport`: the JSON-ready results and the images of the figures; the
``pppml attack`` command writes and draws them. The pieces live in ``config_attack`` (keys and
defaults), ``privacy_config`` (the iDLG options of a config), ``privacy_data`` (model and
crops) and ``privacy_runs`` (the three experiments). See docs/privacy.md.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from pppml_jax.experiments.config_attack import AttackConfig, attack_config
from pppml_jax.experiments.privacy_config import DATASETS
from pppml_jax.experiments.privacy_data import lenet_problem
from pppml_jax.experiments.privacy_runs import (
    Emitter,
    run_local_update,
    run_reference,
    run_views,
)

__all__ = [
    "DATASETS",
    "VIEW_TITLES",
    "PrivacyReport",
    "evaluate",
    "results_table",
]

VIEW_TITLES = {
    "plain": "FedAvg server: the client's gradient",
    "relay": "relay: ciphertext bytes read as float32",
    "next_client": "next client: decrypted masked running sum",
    "aggregate": "every client: the aggregate of n clients",
    "aggregate_minus_own": "a client: aggregate minus its own update",
    "two_party_leak": "ring of 2: aggregate minus own update",
    "relay_plus_hospital": "relay + one hospital, pairwise masks on",
    "colluding_neighbours": "the victim's two neighbours, pairwise masks on",
    "relay_plus_hospital_no_pairwise": "relay + one hospital, pairwise masks off",
    "colluding_neighbours_no_pairwise": "the victim's two neighbours, pairwise masks off",
}
"""What each view is, in the words of the results table."""

_ROW_KEYS = ("n", "label_accuracy", "psnr_median", "psnr_min", "psnr_max", "ssim_median",
             "psnr_best_client_median",
             "floor_psnr_median", "floor_ssim_median", "above_floor")  # fmt: skip


@dataclass(frozen=True)
class PrivacyReport:
    """What :func:`evaluate` returns.

    Attributes:
      results: JSON-ready dict (config, machine, per-experiment summaries and per-image
        records, ``table``, ``seconds``).
      figures: images for the plots: ``reference`` (dataset -> list of (truth, reconstruction,
        record)), ``local_update`` (list of the same), ``views`` (one row per trial: ``truth``,
        ``others`` and ``recs`` view -> (reconstruction, record)).
    """

    results: dict[str, Any]
    figures: dict[str, Any]


def results_table(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per attacked view: who holds it, median PSNR / SSIM, label accuracy, floor."""
    rows = []
    for name, block in results.get("reference", {}).items():
        rows.append({"view": f"FedAvg gradient ({name}, reference)", **_row(block["summary"])})
    if results.get("local_update"):
        lu = results["local_update"]
        view = f"FedAvg update after {lu['local_steps']} local steps ({lu['dataset']})"
        rows.append({"view": view, **_row(lu["summary"])})
    for view, s in results.get("views", {}).get("summary", {}).items():
        rows.append({"view": VIEW_TITLES.get(view, view), "key": view, **_row(s)})
    return rows


def _row(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in _ROW_KEYS if k in summary}


def _load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other processes share the CPU), if known."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "load_average_at_start": _load_average(),
    }


def evaluate(
    config: AttackConfig | Mapping[str, Any] | None = None,
    *,
    progress: Callable[[dict], None] | None = None,
) -> PrivacyReport:
    """Runs the privacy experiment of a config (see the module doc).

    Args:
      config: an :class:`~pppml_jax.experiments.config_attack.AttackConfig`, or a nested
        mapping of its keys (missing keys take defaults; validated on entry).
      progress: called with one dict per event (``{"event": "image", "section": ...}``).

    Returns:
      A :class:`PrivacyReport`.

    Raises:
      ValueError: an unknown config key or a bad value.
    """
    cfg = attack_config(config).to_dict()
    for name in cfg["reference"]["datasets"]:
        if name not in DATASETS:
            raise ValueError(f"reference.datasets entry {name!r} is not one of {DATASETS}")
    emit = Emitter(progress)
    total = time.perf_counter()
    problem = lenet_problem(cfg["model"], crop_size=int(cfg["data"]["crop_size"]),
                            seed=int(cfg["seed"]))  # fmt: skip
    results: dict[str, Any] = {
        "config": cfg,
        "machine": _machine(),
        "num_params": int(sum(np.size(x) for x in jax.tree.leaves(problem.params))),
    }
    figures: dict[str, Any] = {}
    seconds = {}
    for section, runner in (
        ("reference", run_reference),
        ("local_update", run_local_update),
        ("views", run_views),
    ):
        start = time.perf_counter()
        emit(event="section", section=section)
        results[section], figures[section] = runner(problem, cfg, emit)
        seconds[section] = time.perf_counter() - start
    seconds["total"] = time.perf_counter() - total
    results["seconds"] = seconds
    results["machine"]["load_average_at_end"] = _load_average()
    results["table"] = results_table(results)
    return PrivacyReport(results, figures)
