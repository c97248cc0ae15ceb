"""image_folder on PNG (8- and 16-bit, grey and colour) and NIfTI files in class folders."""

import numpy as np
import pytest
from _data_files import canonical_affine, write_nifti
from PIL import Image

from pppml_jax.data import load_federation


def write_png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def write_classes(root, patients=6, images_per_patient=2):
    """Class ``normal`` is dark, ``opacity`` bright; two images per patient."""
    rng = np.random.default_rng(0)
    for name, level in (("normal", 40), ("opacity", 200)):
        for p in range(patients):
            for i in range(images_per_patient):
                pixels = np.clip(rng.normal(level, 5, (20, 20)), 0, 255).astype(np.uint8)
                if i == 1:  # a colour image of the same patient
                    write_png(root / name / f"{name}{p}_{i}.png", np.stack([pixels] * 3, -1))
                else:
                    write_png(root / name / f"{name}{p}_{i}.png", pixels)


def test_class_layout_with_simulated_devices(tmp_path):
    write_classes(tmp_path / "raw")
    profiles = [
        {"label": "plain", "noise_hu": 0.0, "num_patients": 1},
        {"label": "offset", "noise_hu": 0.0, "hu_offset": 160.0, "num_patients": 1},
    ]
    fed = load_federation(
        "image_folder", manual_dir=str(tmp_path / "raw"), data_dir=str(tmp_path / "tfds"),
        size=16, patient_regex=r"^(\w+?)_", profiles=profiles, val_fraction=0.2,
    )  # fmt: skip
    assert fed.num_classes == 2 and fed.info["classes"] == ["normal", "opacity"]
    assert fed.client_names == ("plain (standard kernel)", "offset (standard kernel)")
    assert fed.image_shape == (16, 16, 1)
    everyone = []
    for client in fed.clients:
        for split in ("train", "val", "test"):
            data = client.split(split)
            assert len(data["label"]) == 2 * len(client.patients[split])  # both images kept
            for image, label in zip(data["image"], data["label"], strict=True):
                level = image.mean() - (0.1 if client.name.startswith("offset") else 0.0)
                assert abs(level - (40 if label == 0 else 200) / 255) < 0.03
            everyone += client.patients[split]
    assert len(everyone) == len(set(everyone)) == 12  # patients dealt to exactly one client


def test_client_layout_sixteen_bit_and_nifti(tmp_path):
    root = tmp_path / "raw"
    for c in ("site_a", "site_b"):
        for p in range(3):
            write_png(root / c / "neg" / f"{c}{p}.png", np.full((8, 8), 1000, np.uint16))
            write_nifti(root / c / "pos" / f"{c}{p}.nii.gz", np.full((8, 8, 3), 5.0),
                        canonical_affine())  # fmt: skip
    write_png(root / "site_a" / "neg" / "grad.png", np.tile(np.arange(8, dtype=np.uint8), (8, 1)))
    fed = load_federation(
        "image_folder", manual_dir=str(root), data_dir=str(tmp_path / "tfds"), size=8,
        layout="client/class", nifti_intensity="hu",
    )  # fmt: skip
    assert fed.client_names == ("site_a", "site_b")
    images = np.concatenate([fed.clients[1].split(s)["image"] for s in ("train", "val", "test")])
    labels = np.concatenate([fed.clients[1].split(s)["label"] for s in ("train", "val", "test")])
    np.testing.assert_allclose(images[labels == 0], 1000 / 65535, rtol=1e-6)
    np.testing.assert_allclose(images[labels == 1], (5.0 + 600) / 1600, rtol=1e-6)


def test_corrupt_image_and_empty_class_are_named(tmp_path):
    write_classes(tmp_path / "raw", patients=3, images_per_patient=1)
    (tmp_path / "raw" / "normal" / "normal9_0.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"normal9_0\.png"):
        load_federation("image_folder", manual_dir=str(tmp_path / "raw"),
                        data_dir=str(tmp_path / "tfds"), profiles="identical")  # fmt: skip
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"cls has no PNG"):
        load_federation("image_folder", manual_dir=str(tmp_path / "empty"),
                        data_dir=str(tmp_path / "tfds"))  # fmt: skip


def test_an_empty_folder_is_refused_with_a_clear_message(tmp_path, data_env):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="has no class sub-folders; expected"):
        load_federation("image_folder", manual_dir=str(empty))
    with pytest.raises(ValueError, match="has no client sub-folders"):
        load_federation("image_folder", manual_dir=str(empty), layout="client/class")


def test_a_single_class_warns(tmp_path, data_env):
    from pppml_jax.data.builders.image_folder import OneClassWarning, make_config

    for p in range(4):
        write_png(tmp_path / "raw" / "normal" / f"p{p}.png", np.full((8, 8), 40, np.uint8))
    with pytest.warns(OneClassWarning, match=r"one class \('normal'\).*accuracy 1\.0"):
        make_config(tmp_path / "raw", size=8)
