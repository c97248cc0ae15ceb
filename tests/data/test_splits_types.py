"""Patient, fold and slab splits; the FederatedDataset container's checks."""

import numpy as np
import pytest

from pppml_jax.data import ClientData, ClientPool, FederatedDataset, SplitSpec, split_pool
from pppml_jax.data.splits import assign_patients


def pool(n_patients=10, slices=6, lesion=lambda p, s: s % 3 == 0, name="site"):
    patients = np.array([f"p{p}" for p in range(n_patients) for _ in range(slices)], object)
    positions = np.array([s for _ in range(n_patients) for s in range(slices)], np.int32)
    labels = np.array([int(lesion(p, s)) for p in range(n_patients) for s in range(slices)])
    n = len(patients)
    arrays = {
        "image": np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 4, 4, 3)),
        "label": labels,
        "mask": np.repeat(labels[:, None, None], 4, 1).repeat(4, 2).astype(np.uint8),
    }
    return ClientPool(name=name, profile={}, arrays=arrays, patient=patients, position=positions)


def test_patient_split_is_disjoint_complete_and_seeded():
    data = split_pool(pool(), SplitSpec(seed=3))
    sets = {s: set(data.patients[s]) for s in ("train", "val", "test")}
    assert sum(len(v) for v in sets.values()) == 10 and len(set.union(*sets.values())) == 10
    assert (len(sets["train"]), len(sets["val"]), len(sets["test"])) == (6, 2, 2)
    # every example of a patient is in its split, in (patient, slice) order
    assert len(data.train["label"]) == 6 * 6
    image_ids = data.train["image"][:, 0, 0, 0].astype(int)
    assert list(image_ids) == sorted(image_ids)
    again = split_pool(pool(), SplitSpec(seed=3))
    assert again.patients == data.patients
    assert split_pool(pool(), SplitSpec(seed=4)).patients != data.patients


def test_folds_put_every_patient_in_test_exactly_once():
    patients = np.array([f"p{i}" for i in range(11)])
    tests = []
    for fold in range(5):
        assignment = assign_patients(patients, SplitSpec(num_folds=5, test_fold=fold), client="a")
        tests += [p for p, s in assignment.items() if s == "test"]
        assert "val" in assignment.values() and "train" in assignment.values()
    assert sorted(tests) == sorted(patients)


def test_too_few_patients_is_a_clear_error():
    with pytest.raises(ValueError, match=r"'tiny'.*split='slab'"):
        split_pool(pool(n_patients=2, name="tiny"), SplitSpec())


def test_slab_split_keeps_slabs_whole_and_drops_gap_slices():
    source = pool(n_patients=1, slices=40, lesion=lambda p, s: 10 <= s < 22)
    data = split_pool(source, SplitSpec(method="slab", slab_size=4, slab_gap=True, seed=1))
    where = {}
    for split in ("train", "val", "test"):
        for value in data.split(split)["image"][:, 0, 0, 0]:
            where[int(value)] = split  # the image value is the slice index here
    for position, split in where.items():
        for neighbour in (position - 1, position + 1):
            assert where.get(neighbour, split) == split  # no neighbour in another split
    for split in ("train", "val", "test"):
        assert data.split(split)["label"].any()  # three lesion slabs: lesions in every split
    no_gap = split_pool(source, SplitSpec(method="slab", slab_size=4, slab_gap=False, seed=1))
    assert sum(no_gap.num_examples().values()) == 40
    slabs = {}
    for split in ("train", "val", "test"):
        for value in no_gap.split(split)["image"][:, 0, 0, 0]:
            slabs.setdefault(int(value) // 4, set()).add(split)
    assert all(len(s) == 1 for s in slabs.values())


def test_federation_checks_and_read_only_arrays():
    good = split_pool(pool(), SplitSpec())
    fed = FederatedDataset(name="x", task="segmentation", num_classes=2, clients=[good])
    assert isinstance(fed.clients, tuple) and len(fed.split("train")) == 1
    with pytest.raises(ValueError):
        fed.clients[0].train["image"][0, 0, 0, 0] = 1.0
    small = pool()
    small = ClientPool(
        name="other",
        profile={},
        arrays={**small.arrays, "image": small.arrays["image"][:, :2]},
        patient=small.patient,
        position=small.position,
    )
    with pytest.raises(ValueError, match="image shapes"):
        FederatedDataset(
            name="x",
            task="segmentation",
            num_classes=2,
            clients=[good, split_pool(small, SplitSpec())],
        )
    with pytest.raises(ValueError, match="keys"):
        FederatedDataset(name="x", task="classification", num_classes=2, clients=[good])
    with pytest.raises(TypeError):
        ClientData("c", good.train, good.val, good.test, profile={"bad": object()})
