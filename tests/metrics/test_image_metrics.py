"""MSE, PSNR and Gaussian-window SSIM against closed forms and an independent implementation."""

import jax
import numpy as np
import pytest
from scipy.signal import correlate2d

from pppml_jax.metrics import gaussian_window, mse, psnr, ssim


def test_mse_and_psnr_closed_forms():
    a = np.zeros((2, 4, 4, 1), np.float32)
    b = a.copy()
    b[0] += 0.1  # MSE 0.01 -> PSNR 20 dB at data range 1
    b[1, 0, 0, 0] = 1.0  # MSE 1/16 -> 10 log10(16)
    np.testing.assert_allclose(mse(a, b), [0.01, 1 / 16], rtol=1e-6)
    np.testing.assert_allclose(psnr(a, b), [20.0, 10 * np.log10(16)], rtol=1e-5)
    np.testing.assert_allclose(
        psnr(a, b, data_range=255.0), 10 * np.log10(255.0**2 / np.array([0.01, 1 / 16])), rtol=1e-5
    )
    assert np.isinf(psnr(a, a)[0])
    with pytest.raises(ValueError, match="channel"):
        mse(np.zeros((4, 4)), np.zeros((4, 4)))


def ssim_reference(a, b, data_range=1.0, size=11, sigma=1.5):
    """Wang et al.'s definition written directly: 2D window, 'valid' filtering, float64."""
    offsets = np.arange(size) - (size - 1) / 2
    g = np.exp(-(offsets**2) / (2 * sigma**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for ch in range(a.shape[-1]):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        mx, my = correlate2d(x, window, "valid"), correlate2d(y, window, "valid")
        sxx = correlate2d(x * x, window, "valid") - mx**2
        syy = correlate2d(y * y, window, "valid") - my**2
        sxy = correlate2d(x * y, window, "valid") - mx * my
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
        values.append(m.mean())
    return float(np.mean(values))


def test_ssim_matches_the_definition_on_random_images():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(3, 32, 28, 2)).astype(np.float32)
    b = np.clip(a + rng.normal(scale=0.2, size=a.shape), 0, 1).astype(np.float32)
    got = jax.jit(ssim)(a, b)
    assert got.shape == (3,)
    for i in range(3):
        assert float(got[i]) == pytest.approx(ssim_reference(a[i], b[i]), abs=2e-5)
    np.testing.assert_allclose(ssim(a, b), ssim(b, a), rtol=1e-6)  # symmetric


def test_ssim_closed_forms():
    a = np.full((16, 16, 1), 0.2, np.float32)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
    # Constant images: variances vanish, SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1).
    b = np.full((16, 16, 1), 0.7, np.float32)
    c1 = 0.01**2
    expected = (2 * 0.2 * 0.7 + c1) / (0.2**2 + 0.7**2 + c1)
    assert float(ssim(a, b)) == pytest.approx(expected, rel=1e-5)
    noise = np.random.default_rng(1).uniform(size=(16, 16, 1)).astype(np.float32)
    assert float(ssim(noise, 1.0 - noise)) < 0.0  # anti-correlated structure


def test_ssim_window_and_input_checks():
    np.testing.assert_allclose(float(gaussian_window(11, 1.5).sum()), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="win_size"):
        ssim(np.zeros((8, 8, 1)), np.zeros((8, 8, 1)))
    assert np.isfinite(ssim(np.zeros((8, 8, 1)), np.ones((8, 8, 1)), win_size=7))
    with pytest.raises(ValueError, match="odd"):
        ssim(np.zeros((16, 16, 1)), np.zeros((16, 16, 1)), win_size=4)
