"""Per-seed runs of one algorithm -> results.json's run entry; paired comparisons.

A run entry keeps the fields of a one-seed run (``rounds``, ``final``, ``seconds``,
``execution``), now the mean over the seeds that finished, and adds:

- ``seeds``: the seeds run; ``diverged``: those that diverged (their numbers are never
  averaged in; ``per_seed[s]["divergence"]`` says where and why);
- ``per_seed``: ``{seed: {"status", "rounds", "final", "seconds", "divergence"}}``;
- ``stats``: :func:`~pppml_jax.experiments.stats.summarize` (with ``per_seed`` values) of
  ``mean_global``, ``mean_personalized`` and of each client's ``global`` / ``personalized``.

Comparisons (:func:`compare`) pair two algorithms' final metrics by seed.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pppml_jax.experiments.stats import paired_difference, summarize

AVERAGED = ("seconds", "train_loss", "eval_seconds", "mean_global", "mean_personalized")
PER_CLIENT = ("per_client_global", "per_client_personalized")
METRICS = ("global", "personalized")


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _nanmean(values: Sequence[Any], axis: int = 0) -> Any:
    array = np.asarray([[_nan(v) for v in np.atleast_1d(x)] for x in values], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a client without data in every seed
        mean = np.nanmean(array, axis=axis)
    return mean


def seed_final(last: Mapping[str, Any], clients: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A finished seed's ``final``: mean and per-client metrics of its last round.

    ``clients``: per client its ``name``, ``n_train`` and ``n_test`` for that seed's data.
    """
    per_client = {
        c["name"]: {
            "global": last["per_client_global"][k],
            "personalized": last["per_client_personalized"][k],
            "n_train": c["n_train"],
            "n_test": c["n_test"],
        }
        for k, c in enumerate(clients)
    }
    return {
        "mean_global": last["mean_global"],
        "mean_personalized": last["mean_personalized"],
        "per_client": per_client,
    }


def mean_rounds(runs: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Round records averaged over runs (numbers; per-client lists element-wise); the other
    fields (``clients``, ``secure``) are the first run's."""
    if not runs:
        return []
    out = []
    for records in zip(*runs, strict=False):
        row = dict(records[0])
        for key in AVERAGED:
            if all(key in r for r in records):
                row[key] = float(_nanmean([r[key] for r in records])[0])
        for key in PER_CLIENT:
            if all(key in r for r in records):
                row[key] = [float(v) for v in _nanmean([r[key] for r in records])]
        out.append(row)
    return out


def _mean_count(values: Sequence[int]) -> int | float:
    return values[0] if len(set(values)) == 1 else float(np.mean(values))


def combine(per_seed: Mapping[int, Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """The run entry of one algorithm from its per-seed records (module docstring).

    ``per_seed[s]``: ``status`` ("ok" or "diverged"), ``rounds``, ``final`` (None when
    diverged), ``seconds``, ``execution`` and, when diverged, ``divergence``.
    """
    seeds = list(per_seed)
    ok = [s for s in seeds if per_seed[s]["status"] == "ok"]
    finals = {s: per_seed[s]["final"] for s in ok}
    stats: dict[str, Any] = {}
    for key in ("mean_global", "mean_personalized"):
        values = {s: finals[s][key] for s in ok}
        stats[key] = {**summarize(list(values.values())), "per_seed": values}
    stats["per_client"] = {}
    for name in names:
        entry = {}
        for metric in METRICS:
            values = {s: finals[s]["per_client"][name][metric] for s in ok}
            entry[metric] = {**summarize(list(values.values())), "per_seed": values}
        stats["per_client"][name] = entry
    final: dict[str, Any] = {
        "mean_global": stats["mean_global"]["mean"],
        "mean_personalized": stats["mean_personalized"]["mean"],
        "per_client": {},
    }
    for name in names:
        counts = [finals[s]["per_client"][name] for s in ok]
        final["per_client"][name] = {
            "global": stats["per_client"][name]["global"]["mean"],
            "personalized": stats["per_client"][name]["personalized"]["mean"],
            "n_train": _mean_count([c["n_train"] for c in counts]) if counts else None,
            "n_test": _mean_count([c["n_test"] for c in counts]) if counts else None,
        }
    first = per_seed[seeds[0]]
    return {
        "rounds": mean_rounds([per_seed[s]["rounds"] for s in ok]),
        "final": final,
        "seconds": float(np.mean([per_seed[s]["seconds"] for s in seeds])),
        "execution": first["execution"],
        "seeds": seeds,
        "diverged": [s for s in seeds if per_seed[s]["status"] == "diverged"],
        "stats": stats,
        "per_seed": {str(s): dict(per_seed[s]) for s in seeds},
    }


def compare(runs: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Every pair of algorithms ``a`` before ``b`` (run order): ``a - b`` of each final metric,
    paired by seed (seeds where both finished), for the mean over clients and per client."""
    out = []
    for a, b in itertools.combinations(list(runs), 2):
        sa, sb = runs[a]["stats"], runs[b]["stats"]
        for metric in METRICS:
            key = f"mean_{metric}"
            entry = {
                "a": a,
                "b": b,
                "metric": metric,
                **paired_difference(sa[key]["per_seed"], sb[key]["per_seed"]),
            }
            entry["per_client"] = {
                name: paired_difference(
                    sa["per_client"][name][metric]["per_seed"],
                    sb["per_client"][name][metric]["per_seed"],
                )
                for name in names
            }
            out.append(entry)
    return out
