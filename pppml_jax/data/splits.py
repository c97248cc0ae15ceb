"""Train / validation / test splits by patient (or by slab of slices), deterministic from a seed.

Two rules:

- ``"patient"`` (default): every patient goes to exactly one split. With ``num_folds`` the
  patients are dealt into folds after a seeded shuffle and fold ``test_fold`` is the test set
  (the paper's 5 folds by patient); otherwise ``test_fraction`` of the patients are test. Of the
  rest, ``val_fraction`` (of all patients) go to validation. A client needs at least 3 patients
  (2 when ``val_fraction == 0``).
- ``"slab"``: for clients with one or two patients (the real-CT demo). Each patient's slices
  are cut into slabs of ``slab_size`` consecutive positions; slabs with and without lesion are
  shuffled and dealt to the splits separately (so lesions reach every split when there are
  enough lesion slabs). With ``slab_gap`` the slices next to a slab of another split are
  dropped, so that no input channel (adjacent slice) is shared across splits; without it an
  input may see a neighbouring slice of another split (never its mask).
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from pppml_jax.data.types import ClientData, ClientPool

METHODS = ("patient", "slab")


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """How to split a client's examples.

    Attributes:
      method: ``"patient"`` or ``"slab"`` (module docstring).
      val_fraction: fraction of patients (or slabs) for validation.
      test_fraction: fraction for test (ignored when ``num_folds`` is set).
      num_folds: number of patient folds, or ``None`` to use ``test_fraction``.
      test_fold: the fold used as test, ``0 <= test_fold < num_folds``.
      slab_size: slices per slab (``"slab"`` only).
      slab_gap: drop slices adjacent to another split's slab (``"slab"`` only).
      seed: seed of the shuffles; the client's name is mixed in, so clients differ.
    """

    method: str = "patient"
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    num_folds: int | None = None
    test_fold: int = 0
    slab_size: int = 4
    slab_gap: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"split method={self.method!r} is not one of {METHODS}")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name}={value} must be in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction} "
                "leaves nothing to train on; make their sum < 1"
            )
        if self.num_folds is not None:
            if self.num_folds < 2:
                raise ValueError(f"num_folds={self.num_folds} must be >= 2 (or None)")
            if not 0 <= self.test_fold < self.num_folds:
                raise ValueError(
                    f"test_fold={self.test_fold} must be in [0, num_folds={self.num_folds})"
                )
        if self.slab_size < 1:
            raise ValueError(f"slab_size={self.slab_size} must be >= 1")


def _rng(spec: SplitSpec, salt: str) -> np.random.Generator:
    return np.random.default_rng([spec.seed, zlib.crc32(salt.encode("utf-8"))])


def _counts(n: int, spec: SplitSpec, *, strict: bool, what: str) -> tuple[int, int]:
    """(n_val, n_test) for ``n`` units; ``strict`` demands a non-empty train/val/test."""
    n_test = round(spec.test_fraction * n)
    n_val = round(spec.val_fraction * n)
    if strict:
        need = 2 + (spec.val_fraction > 0)
        if n < need:
            raise ValueError(
                f"{what} has {n} patient(s); a patient split needs at least {need}. Use "
                "split='slab' for clients with one or two patients, or merge clients"
            )
        n_test = max(1, n_test)
        if spec.val_fraction > 0:
            n_val = max(1, n_val)
    elif n >= 3:
        n_test = max(1, n_test)
        n_val = max(1, n_val) if spec.val_fraction > 0 else 0
    elif n == 2:
        n_test, n_val = 1, 0
    else:
        n_test, n_val = 0, 0
    while n_test + n_val >= n and n_val > 0:
        n_val -= 1
    while n_test + n_val >= n and n_test > 0:
        n_test -= 1
    return n_val, n_test


def assign_patients(patients: np.ndarray, spec: SplitSpec, *, client: str) -> dict[str, str]:
    """Maps each distinct patient id to ``"train"``, ``"val"`` or ``"test"``.

    Raises:
      ValueError: too few patients for the requested split (message names the client).
    """
    unique = sorted({str(p) for p in patients})
    order = [unique[i] for i in _rng(spec, client).permutation(len(unique))]
    what = f"client {client!r}"
    if spec.num_folds is None:
        n_val, n_test = _counts(len(order), spec, strict=True, what=what)
        test = order[:n_test]
        rest = order[n_test:]
    else:
        if len(order) < spec.num_folds:
            raise ValueError(
                f"{what} has {len(order)} patients, fewer than num_folds={spec.num_folds}; "
                "lower num_folds"
            )
        test = [p for i, p in enumerate(order) if i % spec.num_folds == spec.test_fold]
        rest = [p for i, p in enumerate(order) if i % spec.num_folds != spec.test_fold]
        n_val = round(spec.val_fraction * len(order))
        if spec.val_fraction > 0:
            n_val = max(1, n_val)
        if n_val >= len(rest):
            raise ValueError(
                f"{what}: {len(rest)} patients outside the test fold cannot give "
                f"{n_val} validation patient(s) and a training set; lower val_fraction"
            )
    assignment = {p: "test" for p in test}
    assignment.update({p: "val" for p in rest[:n_val]})
    assignment.update({p: "train" for p in rest[n_val:]})
    return assignment


def _slab_assignment(pool: ClientPool, spec: SplitSpec) -> np.ndarray:
    """Split name per example for the slab rule (``""`` for dropped gap slices)."""
    patient = np.asarray(pool.patient).astype(str)
    slab = np.asarray(pool.position) // spec.slab_size
    has_lesion = np.asarray(pool.arrays["label"]) > 0
    units: dict[tuple[str, int], bool] = {}
    for p, s, lesion in zip(patient, slab, has_lesion, strict=True):
        units[(p, int(s))] = units.get((p, int(s)), False) or bool(lesion)
    rng = _rng(spec, pool.name)
    split_of: dict[tuple[str, int], str] = {}
    for stratum in (True, False):
        members = sorted(u for u, lesion in units.items() if lesion == stratum)
        members = [members[i] for i in rng.permutation(len(members))]
        n_val, n_test = _counts(len(members), spec, strict=False, what=pool.name)
        for i, unit in enumerate(members):
            split_of[unit] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    out = np.array([split_of[(p, int(s))] for p, s in zip(patient, slab, strict=True)], object)
    if spec.slab_gap:
        position = np.asarray(pool.position)
        lookup = {
            (p, int(q)): out[i] for i, (p, q) in enumerate(zip(patient, position, strict=True))
        }
        for i, (p, q) in enumerate(zip(patient, position, strict=True)):
            for neighbour in (int(q) - 1, int(q) + 1):
                other = lookup.get((p, neighbour))
                if other is not None and other != lookup[(p, int(q))]:
                    out[i] = ""
    return out


def split_pool(pool: ClientPool, spec: SplitSpec) -> ClientData:
    """Splits one client's pool into a :class:`ClientData`, examples ordered by (patient, slice).

    Raises:
      ValueError: too few patients for a patient split.
    """
    patient = np.asarray(pool.patient).astype(str)
    order = np.lexsort((np.asarray(pool.position), patient))
    if spec.method == "patient":
        assignment = assign_patients(patient, spec, client=pool.name)
        split_names = np.array([assignment[p] for p in patient], object)
    else:
        split_names = _slab_assignment(pool, spec)
    splits = {}
    patients = {}
    for name in ("train", "val", "test"):
        index = order[split_names[order] == name]
        splits[name] = pool.take(index)
        patients[name] = tuple(sorted(set(patient[index])))
    return ClientData(
        name=pool.name,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        profile=dict(pool.profile),
        patients=patients,
    )
