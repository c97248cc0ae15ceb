"""The chest phantom and the simulated CT devices."""

import dataclasses

import numpy as np
import pytest

from pppml_jax.data import INFECTION_THRESHOLD, DeviceProfile, acquire, chest_phantom
from pppml_jax.data._ops import block_mean, gaussian_blur
from pppml_jax.data.devices import resolve_profiles


def make(seed, ratio=0.25, **kw):
    return chest_phantom(np.random.default_rng(seed), target_ratio=ratio, **kw)


def test_phantom_is_deterministic_and_anatomically_consistent():
    a, b, c = make(3), make(3), make(4)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.lesion, b.lesion)
    assert not np.array_equal(a.hu, c.hu)
    assert a.hu.shape == a.lesion.shape == a.lung.shape == (48, 64, 64)
    assert not np.any(a.lesion & ~a.lung)  # lesions only inside the lungs
    assert a.infection_ratio == pytest.approx(a.lesion.sum() / a.lung.sum())
    assert a.label == int(a.infection_ratio > INFECTION_THRESHOLD) == 1
    corner = a.hu[:, :3, :3]  # outside the body
    assert np.all(corner == -1000.0)
    healthy = a.hu[a.lung & ~a.lesion]
    assert -900 < np.median(healthy) < -800  # aerated lung parenchyma
    assert np.median(a.hu[a.lesion]) > np.median(healthy) + 150  # lesions are denser


def test_healthy_patient_and_labels_follow_the_ratio():
    healthy = make(5, ratio=0.0)
    assert healthy.lesion.sum() == 0 and healthy.label == 0
    labels = [make(s, ratio=r).label for s, r in [(6, 0.03), (7, 0.3)]]
    assert labels == [0, 1]


def test_device_thickness_and_calibration_without_noise():
    phantom = make(8, size=32, depth=12)
    plain = DeviceProfile(slice_thickness=4, noise_hu=0.0, hu_scale=1.1, hu_offset=-20.0)
    hu, mask = acquire(phantom.hu, phantom.lesion, plain, np.random.default_rng(0))
    expected = 1.1 * block_mean(phantom.hu, 4, axis=0) - 20.0
    np.testing.assert_allclose(hu, expected, rtol=1e-5, atol=1e-3)
    majority = block_mean(phantom.lesion.astype(np.float32), 4, axis=0) >= 0.5
    np.testing.assert_array_equal(mask, majority)


def test_device_noise_level_scales_with_thickness():
    flat = np.zeros((40, 32, 32), np.float32)
    none = np.zeros(flat.shape, bool)
    for k in (1, 4):
        profile = DeviceProfile(slice_thickness=k, noise_hu=30.0)
        hu, _ = acquire(flat, none, profile, np.random.default_rng(k))
        assert hu.std() == pytest.approx(30.0 / np.sqrt(k), rel=0.05)


def test_kernels_change_high_frequencies_and_resolution_loss_blurs():
    phantom = make(9, size=64, depth=4)
    base = DeviceProfile(noise_hu=0.0)

    def detail(profile):
        hu, _ = acquire(phantom.hu, phantom.lesion, profile, np.random.default_rng(0))
        return np.abs(hu - gaussian_blur(hu, 1.0, axes=(1, 2))).mean()

    reference = detail(base)
    assert detail(dataclasses.replace(base, blur_sigma=1.0)) < 0.7 * reference
    assert detail(dataclasses.replace(base, sharpen=1.0)) > 1.5 * reference
    assert detail(dataclasses.replace(base, matrix=24)) < 0.7 * reference


def test_profile_validation_and_presets():
    with pytest.raises(ValueError, match="slice_thickness"):
        DeviceProfile(slice_thickness=0)
    with pytest.raises(ValueError, match="unknown device profile field"):
        DeviceProfile.from_dict({"noise": 3})
    with pytest.raises(ValueError, match="preset"):
        resolve_profiles("nope")
    profiles = resolve_profiles([{"label": "x", "sharpen": 1.0}, DeviceProfile(label="y")])
    assert [p.display_name(1.25) for p in profiles] == [
        "x (sharp kernel, 1.25 mm)",
        "y (standard kernel, 1.25 mm)",
    ]
    quick = resolve_profiles("quickstart")
    assert len(quick) == 4 and len({p.num_patients for p in quick}) > 1
