"""Helpers for the data tests: small files in the real formats, written by the tests."""

import numpy as np


def canonical_affine(spacing=(2.0, 2.0, 5.0), origin=(-10.0, 20.0, -30.0)) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def store_permuted(canon: np.ndarray, affine: np.ndarray):
    """The same image stored with axes (y, z, -x): a real, non-identity voxel layout.

    Voxel (i, j, k) of the stored array is canonical voxel (X - 1 - k, i, j).
    """
    x_len = canon.shape[0]
    stored = np.transpose(np.flip(canon, axis=0), (1, 2, 0))
    stored_affine = np.eye(4)
    stored_affine[:3, 0] = affine[:3, 1]
    stored_affine[:3, 1] = affine[:3, 2]
    stored_affine[:3, 2] = -affine[:3, 0]
    stored_affine[:3, 3] = (affine @ np.array([x_len - 1, 0, 0, 1.0]))[:3]
    return np.ascontiguousarray(stored), stored_affine


def write_nifti(path, data, affine):
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path
