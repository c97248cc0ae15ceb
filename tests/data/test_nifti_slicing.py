"""NIfTI / NRRD reading honours orientation and spacing; slices have square pixels."""

import nrrd
import numpy as np
import pytest
from _data_files import canonical_affine, store_permuted, write_nifti

from pppml_jax.data._ops import window_hu
from pppml_jax.data.nifti import VolumeFileError, check_pair, nrrd_to_nifti, read_volume
from pppml_jax.data.slicing import volume_to_slices


def marker_volume(shape=(12, 10, 8)):
    canon = np.full(shape, -800.0, np.float32)
    canon[-2:, -2:, -2:] = 300.0  # the patient's right, anterior, superior corner
    return canon


def test_read_volume_reorients_a_permuted_and_flipped_file(tmp_path):
    canon = marker_volume()
    affine = canonical_affine((0.8, 0.7, 2.5))
    stored, stored_affine = store_permuted(canon, affine)
    assert stored.shape == (10, 8, 12)
    volume = read_volume(write_nifti(tmp_path / "ct.nii.gz", stored, stored_affine))
    np.testing.assert_array_equal(volume.data, canon)
    np.testing.assert_allclose(volume.affine, affine)
    np.testing.assert_allclose(volume.spacing, (0.8, 0.7, 2.5))


def test_axial_slices_are_in_radiological_orientation():
    canon = marker_volume()
    images, _, positions = volume_to_slices(canon, None, (1.0, 1.0, 1.0), axis="z", size=12)
    top = images[-1, ..., 1]  # most superior slice
    bright = np.argwhere(top > window_hu(np.float32(0.0)))
    # rows: anterior at the top; columns: the patient's right on the left (padding: 1 row)
    assert bright[:, 0].max() <= 3 and bright[:, 1].max() <= 1
    assert list(positions) == list(range(8))


def test_slices_have_square_pixels_and_neighbour_channels():
    hu = np.zeros((4, 20, 5), np.float32) + np.arange(5, dtype=np.float32) * 100.0
    # axis x: rows are z (5 x 2 mm = 10 mm), columns y (20 x 1 mm = 20 mm)
    images, _, _ = volume_to_slices(hu, None, (1.0, 1.0, 2.0), axis="x", size=20)
    air = window_hu(np.float32(-1000.0))
    assert np.all(images[:, :5] == air) and np.all(images[:, -5:] == air)  # padded rows
    assert not np.any(images[:, 5:15] == air)  # 10 mm of anatomy = half the height
    # axis z: slice k has value 100 k; channels are k - 1, k, k + 1 (clamped)
    images, _, _ = volume_to_slices(hu, None, (1.0, 1.0, 2.0), axis="z", size=8)
    centre = images[:, 4, 4, :]
    expected = window_hu(np.array([[0, 0, 100], [0, 100, 200], [300, 400, 400]], np.float32))
    np.testing.assert_allclose(centre[[0, 1, 4]], expected, atol=1e-6)


def test_nrrd_to_nifti_maps_lps_to_ras(tmp_path):
    data = np.arange(4 * 3 * 2, dtype=np.int16).reshape(4, 3, 2)
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag([0.6, 0.6, 5.0]),
        "space origin": np.array([-146.0, -325.0, -777.5]),
    }
    nrrd.write(str(tmp_path / "x.nrrd"), data, header)
    import nibabel as nib

    image = nib.load(str(nrrd_to_nifti(tmp_path / "x.nrrd", tmp_path / "x.nii.gz")))
    np.testing.assert_array_equal(np.asarray(image.dataobj), data)
    expected = np.diag([-0.6, -0.6, 5.0, 1.0])
    expected[:3, 3] = [146.0, 325.0, -777.5]
    np.testing.assert_allclose(image.affine, expected)


def test_bad_files_name_the_file(tmp_path):
    affine = canonical_affine()
    image = read_volume(write_nifti(tmp_path / "a.nii.gz", np.zeros((4, 4, 3)), affine))
    mask = read_volume(write_nifti(tmp_path / "m.nii.gz", np.zeros((4, 4, 2)), affine))
    with pytest.raises(VolumeFileError, match=r"m\.nii\.gz.*shape"):
        check_pair(image, mask)
    shifted = affine.copy()
    shifted[0, 3] += 5.0
    moved = read_volume(write_nifti(tmp_path / "s.nii.gz", np.zeros((4, 4, 3)), shifted))
    with pytest.raises(VolumeFileError, match=r"s\.nii\.gz.*affines"):
        check_pair(image, moved)
    with pytest.raises(VolumeFileError, match=r"flat\.nii\.gz.*3D"):
        read_volume(write_nifti(tmp_path / "flat.nii.gz", np.zeros((4, 4)), affine))
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti file at all")
    with pytest.raises(VolumeFileError, match=r"broken\.nii\.gz"):
        read_volume(tmp_path / "broken.nii.gz")
    with pytest.raises(VolumeFileError, match="does not exist"):
        read_volume(tmp_path / "missing.nii.gz")
