"""A run's fingerprint, and the guard that keeps one output directory to one run.

The fingerprint is the canonical JSON of everything that determines a run's results: the
package version, the seeds, the data, the model, the evaluation rule, the divergence guard,
the tuning search and, per algorithm label, the algorithm (name and options) and every field
of its ``FederationConfig`` (secure options included), with its SHA-256. ``pppml run``
writes it to ``<out>/fingerprint.json``.

:func:`prepare_run_dir` decides what may happen to an output directory before any data is
read:

- a new or empty directory: a fresh run;
- an existing file: refused;
- a directory holding anything, without ``resume``: refused unless ``overwrite``, which
  deletes the previous run's outputs (and only those) first;
- ``resume``: continues the run recorded there, refused (naming the differing dotted keys)
  unless the fingerprints are equal, or differ only by larger ``rounds`` and ``extend`` is
  given: a finished run is then extended by the extra rounds, or by extra seeds (the old
  seeds first, in order).

Checkpoints are keyed per (algorithm label, seed) (:func:`checkpoint_key`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pppml_jax.experiments.config import ConfigError, ExperimentConfig
from pppml_jax.experiments.config_schema import to_dict
from pppml_jax.experiments.jsonable import jsonable

FILE = "fingerprint.json"
RUN_OUTPUTS = (FILE, "results.json", "summary.md", "models", "checkpoints", "*.png")
RUN_OUTPUTS += ("tuning.json", "tensorboard", "mlruns")
"""What ``pppml run`` writes into its output directory (``--overwrite`` deletes only these)."""
EXTENSIBLE = "rounds"
"""The one training field ``extend`` lets grow (and the list of ``seeds``)."""


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """``content``: canonical, JSON-able; ``sha256``: the hash of its canonical JSON."""

    content: Mapping[str, Any]
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "content": self.content}


def canonical(content: Any) -> str:
    """The canonical JSON text of ``content`` (sorted keys, no spaces)."""
    return json.dumps(jsonable(content), sort_keys=True, separators=(",", ":"), default=repr)


def digest(content: Any) -> str:
    """SHA-256 hex of :func:`canonical`."""
    return hashlib.sha256(canonical(content).encode("utf-8")).hexdigest()


def algorithm_content(config: ExperimentConfig, label: str) -> dict[str, Any]:
    """What determines the results of the algorithm ``label``: its spec and FederationConfig."""
    spec = config.algorithm(label)
    fconfig = config.federation_config(label)
    fields = {
        f.name: getattr(fconfig, f.name)
        for f in dataclasses.fields(fconfig)
        if f.name not in ("algorithm", "seed")
    }
    return {
        "algorithm": {"name": spec.name, "options": to_dict(spec.options)},
        "training": json.loads(canonical(fields)),
    }


def fingerprint(config: ExperimentConfig) -> Fingerprint:
    """The :class:`Fingerprint` of ``config`` (with ``pppml_jax.__version__``)."""
    from pppml_jax import __version__

    content = {
        "package_version": __version__,
        "seeds": list(config.seeds),
        "data": to_dict(config.data),
        "model": to_dict(config.model),
        "evaluation": to_dict(config.evaluation),
        "divergence": to_dict(config.divergence),
        "algorithms": {label: algorithm_content(config, label) for label in config.labels},
    }
    if config.tune is not None:
        content["tune"] = to_dict(config.tune)
    content = json.loads(canonical(content))
    return Fingerprint(content, digest(content))


def checkpoint_key(config: ExperimentConfig, label: str, seed: int | None = None) -> str:
    """The hash a checkpoint of ``label`` run with ``seed`` (default: the first) records: the
    fingerprint of that one (label, seed) except ``rounds``."""
    content = dict(fingerprint(config).content)
    seeds = content.pop("seeds")
    algorithm = dict(content["algorithms"][label])
    algorithm["training"] = {k: v for k, v in algorithm["training"].items() if k != EXTENSIBLE}
    seed = seeds[0] if seed is None else seed
    return digest({**content, "seed": seed, "algorithms": {label: algorithm}})


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """The dotted keys where two JSON trees differ (a whole subtree once, where it is new)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                out.append(sub)
            else:
                out += differences(old[key], new[key], sub)
        return out
    return [] if old == new else [path]


def read(out_dir: Path) -> Fingerprint | None:
    """The fingerprint recorded in ``out_dir`` (None if there is none).

    Raises:
      ConfigError: the file is there but unreadable.
    """
    path = out_dir / FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return Fingerprint(data["content"], data["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path} is unreadable ({type(err).__name__}: {err})") from err


def write(out_dir: Path, print_: Fingerprint) -> None:
    """Writes ``out_dir/fingerprint.json`` (atomically)."""
    tmp = out_dir / (FILE + ".tmp")
    tmp.write_text(json.dumps(print_.to_dict(), indent=1, sort_keys=True) + "\n")
    tmp.replace(out_dir / FILE)


def _check_extension(old: Fingerprint, new: Fingerprint, keys: list[str]) -> str | None:
    """None if ``keys`` are only grown ``rounds`` or ``seeds``, else why not."""
    for key in keys:
        if key == "seeds":
            before, after = old.content["seeds"], new.content["seeds"]
            if after[: len(before)] != before:
                return f"seeds {after} do not start with the run's seeds {before}"
            continue
        parts = key.split(".")
        if not (
            len(parts) == 4 and parts[0] == "algorithms" and parts[2:] == ["training", EXTENSIBLE]
        ):
            return f"{key} differs, and only training.rounds or seeds may grow with --extend"
        before = old.content["algorithms"][parts[1]]["training"][EXTENSIBLE]
        after = new.content["algorithms"][parts[1]]["training"][EXTENSIBLE]
        if after < before:
            return f"{key} would shrink from {before} to {after}; --extend only adds rounds"
    return None


def _remove_outputs(out_dir: Path) -> None:
    for pattern in RUN_OUTPUTS:
        for path in out_dir.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def prepare_run_dir(
    out_dir: str | Path,
    config: ExperimentConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    extend: bool = False,
) -> Fingerprint:
    """Checks (and, with ``overwrite``, clears) ``out_dir`` for ``config``; records its print.

    Returns:
      The run's :class:`Fingerprint`, written to ``out_dir/fingerprint.json``.

    Raises:
      ConfigError: ``out_dir`` is a file; holds something and neither ``resume`` nor
        ``overwrite`` is given; ``resume`` meets another run's fingerprint (the message lists
        the differing keys) or a directory without one; ``extend`` without ``resume``, or
        ``resume`` with ``overwrite``.
    """
    out_dir = Path(out_dir)
    new = fingerprint(config)
    if resume and overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it: choose one")
    if extend and not resume:
        raise ConfigError("--extend adds rounds to a run being resumed: use it with --resume")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {str(out_dir)!r} is a file, not a directory")
    held = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    old = read(out_dir) if held else None
    if held and resume:
        if old is None:
            raise ConfigError(
                f"--resume: {out_dir} holds {held[:5]} but no {FILE}, so which run it holds is "
                "unknown; use another --out, or --overwrite to replace its run outputs"
            )
        keys = differences(old.content, new.content)
        if keys:
            problem = _check_extension(old, new, keys) if extend else None
            if not extend or problem is not None:
                more = f" ({problem})" if problem else ""
                hint = (
                    "; add --extend to train a finished run for more rounds"
                    if not extend and _check_extension(old, new, keys) is None
                    else ""
                )
                raise ConfigError(
                    f"--resume: the run in {out_dir} was made with another configuration; "
                    f"differing keys: {', '.join(keys)}{more}{hint}. Use another --out, or "
                    "--overwrite to start again"
                )
    elif held and not overwrite:
        raise ConfigError(
            f"--out {str(out_dir)!r} is not empty (it holds {', '.join(held[:5])}"
            f"{', ...' if len(held) > 5 else ''}); use --resume to continue the run recorded "
            "there, --overwrite to replace it, or another --out"
        )
    elif held:
        _remove_outputs(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write(out_dir, new)
    return new
