"""Checkpoints of the whole federation state with orbax, verified on restore.

Every saved step holds the :class:`FederationState` arrays (server model and optimizer state,
each client's persistent model and model state) and a JSON record (round number, the secure
aggregation's round counter, anything the caller adds, such as the run's history). PRNG keys
need no saving: every random choice is derived from (seed, round, client).

Orbax finalises a step atomically (written under a temporary name, then renamed). After that,
a ``manifest.json`` with the SHA-256 of every file of the step is written; a step whose
manifest is missing or does not match (a crash mid-save, a truncated or altered file) is
skipped with a warning and the previous step is restored instead.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import jax

from pppml_jax.federation.state import FederationState

_ARRAY_FIELDS = ("params", "model_state", "server_state", "client_state", "client_model_state")
MANIFEST = "manifest.json"


class CheckpointWarning(UserWarning):
    """A checkpoint step was unusable and an earlier one (or none) was restored."""


def _arrays(state: FederationState) -> dict:
    return {f: getattr(state, f) for f in _ARRAY_FIELDS if jax.tree.leaves(getattr(state, f))}


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(step_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(step_dir)): _digest(p)
        for p in sorted(step_dir.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


class Checkpointer:
    """Saves and restores :class:`FederationState` steps under ``directory``.

    Args:
      directory: where steps are written (one sub-directory per saved round).
      keep: how many of the latest steps to keep (older ones are deleted).
    """

    def __init__(self, directory: str | Path, *, keep: int = 3):
        import orbax.checkpoint as ocp

        if keep < 2:
            raise ValueError(f"keep={keep}: keep at least 2 steps so a corrupt one can fall back")
        self.directory = Path(directory).resolve()
        self._ocp = ocp
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=False, create=True
            ),
        )

    def save(self, state: FederationState, record: dict[str, Any] | None = None) -> None:
        """Writes ``state`` as step ``state.round`` with a JSON-able ``record``, then a manifest."""
        ocp = self._ocp
        step = int(state.round)
        meta = {"round": step, "secure_round": step, **(record or {})}
        if step in self._manager.all_steps():
            # a step left by a run that crashed after it (or mid-save) and was resumed from an
            # earlier one: this run is redoing that round, so its new state replaces the old
            self._manager.delete(step)
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_arrays(state)), record=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._manager.wait_until_finished()
        if jax.process_index() == 0:
            step_dir = self.directory / str(step)
            manifest = step_dir / MANIFEST
            tmp = manifest.with_suffix(".tmp")
            tmp.write_text(json.dumps(_files(step_dir), indent=0))
            tmp.replace(manifest)

    def steps(self) -> list[int]:
        """The saved steps, ascending."""
        return sorted(self._manager.all_steps())

    def verify(self, step: int) -> str | None:
        """None if step ``step`` is intact, else what is wrong with it."""
        step_dir = self.directory / str(step)
        manifest = step_dir / MANIFEST
        if not manifest.is_file():
            return "no manifest (the save did not finish)"
        try:  # any bytes at all: not UTF-8, not JSON, or JSON of another shape
            expected = json.loads(manifest.read_bytes().decode("utf-8"))
        except (OSError, ValueError) as err:
            return f"unreadable manifest ({type(err).__name__}: {err})"
        if not isinstance(expected, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in expected.items()
        ):
            return "unreadable manifest (not a mapping of file names to SHA-256 digests)"
        actual = _files(step_dir)
        if actual != expected:
            changed = sorted(
                f for f in set(expected) | set(actual) if expected.get(f) != actual.get(f)
            )
            return f"files missing or altered: {changed[:5]}"
        return None

    def restore_latest(
        self, template: FederationState
    ) -> tuple[FederationState, dict[str, Any]] | None:
        """The newest intact step as ``(state, record)``, or None if there is none.

        Args:
          template: a state of the same federation (e.g. ``federation.init(params)``): gives the
            structure, shapes, dtypes and shardings to restore into.

        Warns:
          CheckpointWarning: for every newer step that was skipped, naming what was wrong.
        """
        ocp = self._ocp
        arrays = _arrays(template)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, arrays)
        for step in reversed(self.steps()):
            problem = self.verify(step)
            if problem is None:
                try:
                    restored = self._manager.restore(
                        step,
                        args=ocp.args.Composite(
                            state=ocp.args.StandardRestore(abstract),
                            record=ocp.args.JsonRestore(),
                        ),
                    )
                except Exception as err:  # orbax / tensorstore raise many kinds
                    problem = f"restore failed: {type(err).__name__}: {err}"
            if problem is not None:
                warnings.warn(
                    f"checkpoint step {step} in {self.directory} is unusable ({problem}); "
                    "trying the previous one",
                    CheckpointWarning,
                    stacklevel=2,
                )
                continue
            # orbax returns optax NamedTuples as plain tuples: rebuild the template's structure
            leaves = jax.tree.leaves(restored.state)
            values = jax.tree.unflatten(jax.tree.structure(arrays), leaves)
            record = dict(restored.record)
            state = template._replace(round=int(record["round"]), **values)
            return state, record
        return None
