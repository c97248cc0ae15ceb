"""real_ct with task="classification": the real scans' slices dealt to simulated devices."""

import numpy as np
import pytest
from test_real_ct import fake_sdist

from pppml_jax.data import load_federation
from pppml_jax.data.loading import slice_labels
from pppml_jax.data.real_ct import prepare_real_ct

TWO_DEVICES = [
    {"label": "sharp", "num_patients": 1, "noise_hu": 30.0, "sharpen": 1.0},
    {"label": "soft", "num_patients": 1, "noise_hu": 5.0, "blur_sigma": 1.0, "hu_offset": 80.0},
]


def test_slice_labels():
    position = np.array([3, 0, 2, 1])
    mask = np.zeros((4, 2, 2), np.int32)
    mask[2, 0, 1] = 1
    np.testing.assert_array_equal(slice_labels("cranial", position, mask), [1, 0, 1, 0])
    np.testing.assert_array_equal(slice_labels("tumour", position, mask), [0, 0, 1, 0])


@pytest.mark.parametrize("label", ["cranial", "tumour"])
def test_real_ct_classification_federation(tmp_path, data_env, label):
    root = tmp_path / "real"
    prepare_real_ct(root, sdist=fake_sdist(tmp_path))
    options = {"root": str(root), "download": False, "size": 16, "task": "classification"}
    fed = load_federation(
        "real_ct", **options, label=label, patient_slab=2, profiles=TWO_DEVICES, seed=3
    )
    assert fed.task == "classification" and fed.num_classes == 2
    assert fed.client_names == ("sharp (sharp kernel)", "soft (soft kernel)")
    assert fed.image_shape == (16, 16, 3)
    counts = [sum(c.num_examples().values()) for c in fed.clients]
    assert sum(counts) == 12 + 14  # every slice of both scans, once
    labels = np.concatenate(
        [c.split(s)["label"] for c in fed.clients for s in ("train", "val", "test")]
    )
    expected = 6 + 7 if label == "cranial" else 3 + 6  # halves; tumour slices of the fake scans
    assert labels.sum() == expected
    for client in fed.clients:  # pseudo-patients (slabs) never straddle splits
        seen = [set(client.patients[s]) for s in ("train", "val", "test")]
        assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
        assert all(p.split("/")[0] in ("lung1", "lung2") for p in client.patients["train"])
    again = load_federation(
        "real_ct", **options, label=label, patient_slab=2, profiles=TWO_DEVICES, seed=3
    )
    np.testing.assert_array_equal(again.clients[1].test["image"], fed.clients[1].test["image"])


def test_real_ct_classification_options_are_checked(tmp_path, data_env):
    root = tmp_path / "real"
    prepare_real_ct(root, sdist=fake_sdist(tmp_path))
    with pytest.raises(ValueError, match="need task='classification'"):
        load_federation("real_ct", root=str(root), download=False, size=16, label="tumour")
    with pytest.raises(ValueError, match="label='lesion' is not one of"):
        load_federation(
            "real_ct", root=str(root), download=False, size=16, task="classification",
            label="lesion",
        )  # fmt: skip
