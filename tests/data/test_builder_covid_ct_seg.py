"""covid_ct_seg on small .nii.gz files with real, non-identity affines."""

import csv

import numpy as np
import pytest
from _data_files import canonical_affine, store_permuted, write_nifti

from pppml_jax.data import load_federation
from pppml_jax.data._ops import window_hu

SHAPE = (16, 16, 6)  # X, Y, Z in canonical RAS order


def patient_volumes(seed):
    rng = np.random.default_rng(seed)
    ct = np.full(SHAPE, -850.0, np.float32) + rng.normal(0, 10, SHAPE).astype(np.float32)
    mask = np.zeros(SHAPE, np.uint8)
    z = 1 + seed % 4
    mask[-5:-1, -5:-1, z] = 1  # lesion in the patient's right-anterior quadrant, slice z
    ct[mask == 1] = -100.0
    return ct, mask, z


def write_dataset(root, devices=("dev_B", "dev_A"), patients=3, broken=None):
    rows = []
    lesion_slice = {}
    for d, device in enumerate(devices):
        for p in range(patients):
            pid = f"{device}_p{p}"
            ct, mask, z = patient_volumes(10 * d + p)
            lesion_slice[pid] = z
            affine = canonical_affine((1.5, 1.5, 4.0), origin=(-12.0 + p, 8.0, -50.0))
            stored_ct, stored_affine = store_permuted(ct, affine)
            stored_mask, _ = store_permuted(mask, affine)
            write_nifti(root / device / f"{pid}_ct.nii.gz", stored_ct, stored_affine)
            mask_path = root / device / f"{pid}_mask.nii.gz"
            if broken == "shape" and (d, p) == (0, 1):
                stored_mask = stored_mask[:, :, :-1]
            write_nifti(mask_path, stored_mask, stored_affine)
            if broken == "corrupt" and (d, p) == (1, 2):
                mask_path.write_bytes(b"\x1f\x8b garbage")
            rows.append({
                "patient": pid, "device": device,
                "image": f"{device}/{pid}_ct.nii.gz", "mask": f"{device}/{pid}_mask.nii.gz",
            })  # fmt: skip
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["patient", "device", "image", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    return lesion_slice


def test_build_and_load_by_device_and_patient_folds(tmp_path):
    lesion_slice = write_dataset(tmp_path / "raw")
    options = {"manual_dir": str(tmp_path / "raw"), "data_dir": str(tmp_path / "tfds")}
    fed = load_federation("covid_ct_seg", axis="z", size=16, num_folds=3, **options)
    assert fed.client_names == ("dev_A", "dev_B")  # sorted device labels
    assert fed.task == "segmentation" and fed.image_shape == (16, 16, 3)
    for client in fed.clients:
        assert sum(client.num_examples().values()) == 3 * SHAPE[2]  # every axial slice
        for split in ("train", "val", "test"):
            data = client.split(split)
            assert len(client.patients[split]) == 1 and len(data["label"]) == SHAPE[2]
            np.testing.assert_array_equal(data["label"], data["mask"].any(axis=(1, 2)))
        # The lesion sits on its slice, in the top-left (anterior, patient right) quadrant.
        data = client.train
        hits = np.nonzero(data["label"])[0]
        assert list(hits) == [lesion_slice[client.patients["train"][0]]]  # slices in z order
        rows, cols = np.nonzero(data["mask"][hits[0]])
        assert rows.max() < 8 and cols.max() < 8
        assert data["image"][hits[0], rows[0], cols[0], 1] == pytest.approx(
            window_hu(np.float32(-100.0)), abs=0.02
        )
    # Folds: over the three test folds every patient of a client is tested once.
    tested = []
    for fold in range(3):
        fed = load_federation(
            "covid_ct_seg", axis="z", size=16, num_folds=3, test_fold=fold, **options
        )
        tested += [p for c in fed.clients for p in c.patients["test"]]
    assert sorted(tested) == sorted(lesion_slice)


def test_other_axes_give_other_slices(tmp_path):
    write_dataset(tmp_path / "raw", devices=("d",))
    fed = load_federation(
        "covid_ct_seg", manual_dir=str(tmp_path / "raw"), data_dir=str(tmp_path / "tfds"),
        axis="x", size=16, stride=2, num_folds=3,
    )  # fmt: skip
    assert sum(fed.clients[0].num_examples().values()) == 3 * SHAPE[0] // 2


@pytest.mark.parametrize(
    ("broken", "message"),
    [("shape", r"dev_B_p1_mask\.nii\.gz.*shape"), ("corrupt", r"dev_A_p2_mask\.nii\.gz")],
)
def test_mismatched_or_corrupt_files_are_named(tmp_path, broken, message):
    write_dataset(tmp_path / "raw", broken=broken)
    with pytest.raises(ValueError, match=message):
        load_federation(
            "covid_ct_seg", manual_dir=str(tmp_path / "raw"), data_dir=str(tmp_path / "tfds"),
            size=16, num_folds=3,
        )  # fmt: skip


def test_manifest_errors(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "manifest.csv").write_text("patient,device,image\nx,y,z.nii.gz\n")
    with pytest.raises(ValueError, match="lacks column"):
        load_federation("covid_ct_seg", manual_dir=str(tmp_path / "raw"), data_dir=str(tmp_path))
    (tmp_path / "raw" / "manifest.csv").write_text("patient,device,image,mask\nx,y,a.nii,b.nii\n")
    with pytest.raises(ValueError, match=r"manifest\.csv:2: image file .*a\.nii does not exist"):
        load_federation("covid_ct_seg", manual_dir=str(tmp_path / "raw"), data_dir=str(tmp_path))
