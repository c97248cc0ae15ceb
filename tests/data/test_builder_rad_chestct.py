"""rad_chestct on small compressed-numpy volumes and a split CSV like the paper's."""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pppml_jax.data import chest_phantom, load_federation
from pppml_jax.data._ops import window_hu
from pppml_jax.data.lung_crop import lung_box


def write_dataset(root, clients=("0", "1", "2"), per_client=3, broken=None):
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for c, client in enumerate(clients):
        for p in range(per_client):
            volume_id = f"trn{c}{p:03d}"
            phantom = chest_phantom(np.random.default_rng(c * 10 + p), size=32, depth=20,
                                    target_ratio=0.2 if p % 2 else 0.0)  # fmt: skip
            ct = np.transpose(phantom.hu, (0, 1, 2)).astype(np.int16)  # [slices, H, W]
            folder = root / ("volumes_a" if p % 2 else "volumes_b")
            folder.mkdir(exist_ok=True)
            np.savez_compressed(folder / f"{volume_id}.npz", ct=ct)
            rows.append({"NoteAcc_DEID": volume_id, "client": client,
                         "binary_infection_to_lung_ratio": phantom.label})  # fmt: skip
    if broken == "corrupt":
        (root / "volumes_a" / "trn1001.npz").write_bytes(b"PK\x03\x04 truncated")
    if broken == "flat":
        np.savez_compressed(root / "volumes_a" / "trn1001.npz", ct=np.zeros((4, 4), np.int16))
    if broken == "label":
        rows[2]["binary_infection_to_lung_ratio"] = 2
    if broken == "missing":
        rows.append({"NoteAcc_DEID": "trn9999", "client": "0",
                     "binary_infection_to_lung_ratio": 0})  # fmt: skip
    with (root / "split.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_lung_box_contains_the_lungs_and_not_the_outside_air():
    phantom = chest_phantom(np.random.default_rng(0), size=64, depth=24)
    box = lung_box(phantom.hu)
    inside = np.zeros(phantom.hu.shape, bool)
    inside[box] = True
    assert not np.any(phantom.lung & ~inside)  # every lung voxel is in the box
    assert inside[0].sum() < 0.6 * inside[0].size  # the outside air is cropped away


def test_build_clients_labels_and_paper_thickness(tmp_path):
    rows = write_dataset(tmp_path / "raw")
    options = {"manual_dir": str(tmp_path / "raw"), "data_dir": str(tmp_path / "tfds"), "size": 20}
    fed = load_federation("rad_chestct", **options)
    assert fed.client_names == ("0", "1", "2")
    assert fed.task == "classification" and fed.image_shape == (20, 20, 20, 1)
    by_id = {r["NoteAcc_DEID"]: int(r["binary_infection_to_lung_ratio"]) for r in rows}
    for client, thickness in zip(fed.clients, (1, 5, 10), strict=True):
        assert client.profile["slice_thickness"] == thickness
        for split in ("train", "val", "test"):
            (patient,) = client.patients[split]
            assert client.split(split)["label"].tolist() == [by_id[patient]]
        depth_used = np.abs(client.train["image"][0]).reshape(20, -1).max(axis=1) > 0
        expected = np.ceil(20 / thickness)  # blocks of `thickness` slices, zero-padded
        assert depth_used.sum() == expected
    plain = load_federation("rad_chestct", thickness=None, crop=False, **options)
    raw = np.load(tmp_path / "raw" / "volumes_b" / "trn0000.npz")["ct"].astype(np.float32)
    expected = window_hu(
        np.asarray(jax.image.resize(jnp.asarray(raw), (20, 20, 20), "linear", antialias=True)),
        lower=-1000.0, upper=1000.0,
    )  # fmt: skip
    client = plain.clients[0]
    index = next(s for s in ("train", "val", "test") if client.patients[s] == ("trn0000",))
    np.testing.assert_allclose(client.split(index)["image"][0, ..., 0], expected, atol=2e-3)


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("corrupt", r"trn1001\.npz"),
        ("flat", r"trn1001\.npz.*shape \(4, 4\)"),
        ("label", r"split\.csv:4: .*must be 0 or 1"),
        ("missing", r"trn9999"),
    ],
)
def test_bad_files_are_named(tmp_path, broken, message):
    write_dataset(tmp_path / "raw", broken=broken)
    with pytest.raises(ValueError, match=message):
        load_federation(
            "rad_chestct", manual_dir=str(tmp_path / "raw"), data_dir=str(tmp_path / "tfds"),
            size=20,
        )  # fmt: skip


def test_missing_column_and_too_many_clients_for_paper_thickness(tmp_path):
    write_dataset(tmp_path / "raw", clients=("a", "b", "c", "d"))
    options = {"manual_dir": str(tmp_path / "raw"), "data_dir": str(tmp_path / "tfds"), "size": 20}
    with pytest.raises(ValueError, match="lacks column"):
        load_federation("rad_chestct", client_column="scanner", **options)
    with pytest.raises(ValueError, match="thickness"):
        load_federation("rad_chestct", **options)
    fed = load_federation("rad_chestct", thickness=[1, 2, 2, 1], **options)
    assert len(fed.clients) == 4
