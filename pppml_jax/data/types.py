"""The federation a data loader returns: frozen dataclasses of per-client numpy splits."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

TASKS = ("classification", "segmentation")
SPLITS = ("train", "val", "test")


def _frozen_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in arrays.items():
        view = np.asarray(value).view()
        view.setflags(write=False)  # a read-only view: no copy, the caller's array is untouched
        out[key] = view
    return out


@dataclasses.dataclass(frozen=True)
class ClientData:
    """One client (a hospital or a device group) with patient-disjoint splits.

    Each split is a dict of read-only numpy arrays sharing a leading examples axis:

    - ``"image"``: float32 ``[N, H, W, C]`` (2D) or ``[N, D, H, W, C]`` (3D volumes);
    - ``"label"``: int32 ``[N]``; the patient label (classification) or, for segmentation,
      1 when the slice has any lesion pixel;
    - ``"mask"``: int32 ``[N, H, W]`` in ``{0, 1}`` (segmentation only).

    Attributes:
      name: the client's name, e.g. ``"hospital_A (sharp kernel, 1.25 mm)"``.
      train, val, test: the splits; ``val`` serves model selection, ``test`` only reporting.
      profile: JSON-able description of the (simulated or real) device.
      patients: for each split name, the sorted patient ids in it (disjoint across splits
        unless the client was split by slab, see :mod:`pppml_jax.data.splits`).
    """

    name: str
    train: Mapping[str, np.ndarray]
    val: Mapping[str, np.ndarray]
    test: Mapping[str, np.ndarray]
    profile: Mapping[str, Any]
    patients: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for split in SPLITS:
            object.__setattr__(self, split, _frozen_arrays(getattr(self, split)))
        json.dumps(dict(self.profile))  # raises TypeError early when not JSON-able

    def split(self, name: str) -> Mapping[str, np.ndarray]:
        """The arrays of split ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in SPLITS:
            raise ValueError(f"split={name!r} is not one of {SPLITS}")
        return getattr(self, name)

    def num_examples(self) -> dict[str, int]:
        """Examples per split, e.g. ``{"train": 60, "val": 20, "test": 20}``."""
        return {s: len(self.split(s)["label"]) for s in SPLITS}


@dataclasses.dataclass(frozen=True)
class FederatedDataset:
    """A federated data set: a task and an ordered tuple of clients.

    Attributes:
      name: the loader's name (``"synthetic_chest_ct"``, ``"covid_ct_seg"``, ...).
      task: ``"classification"`` or ``"segmentation"`` (binary: ``num_classes == 2``).
      num_classes: number of classes (logits) the model must output.
      clients: the clients, in a fixed order.
      info: JSON-able provenance: source, preprocessing, split rule and the loader's options.
    """

    name: str
    task: str
    num_classes: int
    clients: tuple[ClientData, ...]
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "clients", tuple(self.clients))
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} is not one of {TASKS}")
        if not self.clients:
            raise ValueError("a federation needs at least one client")
        keys = {"image", "label"} | ({"mask"} if self.task == "segmentation" else set())
        shapes = set()
        for client in self.clients:
            for split in SPLITS:
                arrays = client.split(split)
                if set(arrays) != keys:
                    raise ValueError(
                        f"client {client.name!r} split {split!r} has keys {sorted(arrays)}; "
                        f"a {self.task} federation needs exactly {sorted(keys)}"
                    )
                n = len(arrays["label"])
                for key, value in arrays.items():
                    if len(value) != n:
                        raise ValueError(
                            f"client {client.name!r} split {split!r}: {key!r} has {len(value)} "
                            f"examples but 'label' has {n}"
                        )
                shapes.add(arrays["image"].shape[1:])
        if len(shapes) != 1:
            raise ValueError(
                f"clients have different image shapes {sorted(shapes)}; one model needs one "
                "input shape: resize the data to a common size"
            )
        json.dumps(dict(self.info))

    @property
    def client_names(self) -> tuple[str, ...]:
        """The clients' names in order."""
        return tuple(c.name for c in self.clients)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one input example, e.g. ``(64, 64, 3)``."""
        return tuple(self.clients[0].train["image"].shape[1:])

    def split(self, name: str) -> list[Mapping[str, np.ndarray]]:
        """One dict of arrays per client for split ``name``: the engine's ``clients`` argument."""
        return [c.split(name) for c in self.clients]

    def summary(self) -> list[dict[str, Any]]:
        """Per client: name, examples per split and the fraction of positive labels."""
        rows = []
        for c in self.clients:
            row: dict[str, Any] = {"name": c.name, **c.num_examples()}
            labels = np.concatenate([c.split(s)["label"] for s in SPLITS])
            row["positive_fraction"] = float(np.mean(labels > 0)) if len(labels) else 0.0
            rows.append(row)
        return rows


@dataclasses.dataclass(frozen=True)
class ClientPool:
    """A client's examples before splitting (what a generator or a TFDS builder yields).

    Attributes:
      name: client name.
      profile: JSON-able device description.
      arrays: ``"image"``, ``"label"`` and, for segmentation, ``"mask"``, leading axis N.
      patient: ``[N]`` patient id of each example (str).
      position: ``[N]`` int, the slice index inside the patient's volume (0 for volumes).
    """

    name: str
    profile: Mapping[str, Any]
    arrays: Mapping[str, np.ndarray]
    patient: np.ndarray
    position: np.ndarray

    def __post_init__(self):
        n = len(self.patient)
        for key, value in self.arrays.items():
            if len(value) != n:
                raise ValueError(
                    f"client {self.name!r}: {key!r} has {len(value)} examples, patient has {n}"
                )
        if len(self.position) != n:
            raise ValueError(f"client {self.name!r}: position has {len(self.position)} entries")

    def take(self, index: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """The arrays at ``index`` (with ``label`` as int32 and ``mask`` as int32)."""
        index = np.asarray(index, dtype=np.int64)
        out = {}
        for key, value in self.arrays.items():
            taken = value[index]
            if key in ("label", "mask"):
                taken = taken.astype(np.int32)
            elif key == "image":
                taken = taken.astype(np.float32)
            out[key] = taken
        return out
