"""load_federation: option checking and the TFDS path of the synthetic data set."""

import subprocess
import sys

import numpy as np
import pytest

from pppml_jax.data import DeviceProfile, load_federation

SMALL = [
    DeviceProfile(label=f"s{i}", num_patients=3, slice_thickness=i + 1).__dict__ for i in range(2)
]


def test_synthetic_through_tfds_equals_the_in_memory_federation(tmp_path):
    options = {"profiles": SMALL, "image_size": 32, "depth": 12, "slices_per_patient": 3, "seed": 5}
    memory = load_federation("synthetic_chest_ct", **options)
    stored = load_federation("synthetic_chest_ct", via_tfds=True, data_dir=str(tmp_path), **options)
    assert stored.client_names == memory.client_names
    for a, b in zip(memory.clients, stored.clients, strict=True):
        assert a.patients == b.patients and dict(a.profile) == dict(b.profile)
        for split in ("train", "val", "test"):
            for key in ("image", "mask", "label"):
                np.testing.assert_array_equal(a.split(split)[key], b.split(split)[key])
    assert (tmp_path / "synthetic_chest_ct").is_dir()
    assert any(tmp_path.rglob("*.array_record*"))


def test_reading_needs_no_tensorflow(tmp_path):
    code = (
        "import sys, pppml_jax.data as d;"
        f"d.load_federation('synthetic_chest_ct', via_tfds=True, data_dir={str(tmp_path)!r},"
        " profiles='identical', image_size=16, depth=6, slices_per_patient=2);"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_option_errors_are_explicit(tmp_path):
    with pytest.raises(ValueError, match="unknown federation"):
        load_federation("imagenet")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['colour'\]"):
        load_federation("synthetic_chest_ct", colour="red")
    with pytest.raises(ValueError, match="manual_dir"):
        load_federation("covid_ct_seg")
    with pytest.raises(ValueError, match="not a directory"):
        load_federation("rad_chestct", manual_dir=str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="val_fraction"):
        load_federation("synthetic_chest_ct", val_fraction=1.5)
