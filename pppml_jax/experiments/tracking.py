"""Experiment trackers: TensorBoard event files (tensorboardX) and, optionally, MLflow.

One tracked run per (algorithm label, seed):

- TensorBoard: ``<out>/tensorboard/<label>/seed-<s>/`` with, per round, ``train/loss``,
  ``time/round_seconds``, ``time/eval_seconds``, ``eval/mean_global``,
  ``eval/mean_personalized``, ``eval_client/<k>/{global,personalized}``, ``secure/bytes``,
  and the hyper-parameters with the final metrics (TensorBoard's HPARAMS tab).
  ``tensorboard --logdir <out>/tensorboard`` shows every algorithm and seed side by side.
- MLflow (``tracking.mlflow: true``, the ``[mlflow]`` extra): the same numbers in a local
  file store (default ``<out>/mlruns``), one MLflow run per label and seed.

Trackers only watch: results never depend on them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pppml_jax.experiments.config_run import TrackingConfig
from pppml_jax.experiments.config_schema import ConfigError


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a round record under their tracker names."""
    out: dict[str, Any] = {
        "train/loss": record.get("train_loss"),
        "time/round_seconds": record.get("seconds"),
        "time/eval_seconds": record.get("eval_seconds"),
        "eval/mean_global": record.get("mean_global"),
        "eval/mean_personalized": record.get("mean_personalized"),
    }
    for metric in ("global", "personalized"):
        for k, value in enumerate(record.get(f"per_client_{metric}") or []):
            out[f"eval_client/{k}/{metric}"] = value
    secure = record.get("secure") or {}
    if isinstance(secure.get("bytes"), (int, float)):
        out["secure/bytes"] = secure["bytes"]
    return {
        k: float(v)
        for k, v in out.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def hparams(fields: Mapping[str, Any]) -> dict[str, float | str | bool]:
    """Hyper-parameters as TensorBoard / MLflow accept them: numbers, strings and booleans
    as they are, anything else (None, mappings) as its text."""
    return {
        k: v if isinstance(v, (int, float, str, bool)) else str(v)
        for k, v in fields.items()
        if v is not None
    }


def _import_mlflow():
    try:
        import mlflow
    except ImportError as err:
        raise ConfigError(
            "tracking.mlflow: true needs MLflow: pip install 'pppml-jax[mlflow]' "
            f"(or set tracking.mlflow: false) ({err})"
        ) from err
    return mlflow


class Tracker:
    """Writes every (label, seed) run to the enabled trackers (module docstring)."""

    def __init__(self, out_dir: str | Path, config: TrackingConfig, experiment: str):
        self.out_dir = Path(out_dir)
        self.config = config
        self.experiment = experiment
        self._writer = None
        self._mlflow = _import_mlflow() if config.mlflow else None
        self._hparams: dict[str, Any] = {}

    def start(self, label: str, seed: int, fields: Mapping[str, Any]) -> None:
        """Opens the run of ``label`` and ``seed`` with its hyper-parameters ``fields``."""
        self.close()
        self._hparams = {"algorithm": label, "seed": seed, **hparams(fields)}
        if self.config.tensorboard:
            from tensorboardX import SummaryWriter

            logdir = self.out_dir / "tensorboard" / label / f"seed-{seed}"
            self._writer = SummaryWriter(logdir=str(logdir))
            text = "\n".join(f"    {k}: {v}" for k, v in self._hparams.items())
            self._writer.add_text("hparams", text, 0)
        if self._mlflow is not None:
            uri = self.config.mlflow_uri or (self.out_dir / "mlruns").resolve().as_uri()
            self._mlflow.set_tracking_uri(uri)
            self._mlflow.set_experiment(self.experiment)
            self._mlflow.start_run(run_name=f"{label}-seed{seed}")
            self._mlflow.log_params(self._hparams)

    def round(self, record: Mapping[str, Any]) -> None:
        """Logs one round's numbers at step ``record["round"]``."""
        step = int(record["round"])
        values = scalars(record)
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(key, value, step)
        if self._mlflow is not None:
            self._mlflow.log_metrics({k.replace("/", "."): v for k, v in values.items()}, step)

    def finish(self, status: str, final: Mapping[str, Any] | None) -> None:
        """Records the outcome (``"ok"`` or ``"diverged"``) and final metrics; closes the run."""
        metrics = {"final/diverged": float(status == "diverged")}
        for key in ("mean_global", "mean_personalized"):
            value = (final or {}).get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                metrics[f"final/{key}"] = float(value)
        if self._writer is not None:
            self._writer.add_hparams(self._hparams, metrics, name="hparams")
        if self._mlflow is not None:
            self._mlflow.set_tag("status", status)
            self._mlflow.log_metrics({k.replace("/", "."): v for k, v in metrics.items()})
        self.close()

    def close(self) -> None:
        """Flushes and closes the open run (if any)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._mlflow is not None and self._mlflow.active_run() is not None:
            self._mlflow.end_run()
