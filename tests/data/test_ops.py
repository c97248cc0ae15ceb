"""Host-side array operations against independent implementations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from pppml_jax.data._ops import block_mean, gaussian_blur, pad_depth, resize, window_hu


@pytest.mark.parametrize("shape", [(10, 15), (40, 60), (13, 17), (5, 70)])
def test_resize_matches_jax_image_resize(shape):
    x = np.random.default_rng(0).standard_normal((3, 20, 30)).astype(np.float32)
    expected = jax.image.resize(jnp.asarray(x), (3, *shape), "linear", antialias=True)
    np.testing.assert_allclose(resize(x, shape, axes=(1, 2)), expected, atol=1e-5)


def test_gaussian_blur_matches_scipy_reflect():
    x = np.random.default_rng(1).standard_normal((4, 16, 12))
    expected = ndimage.gaussian_filter(x, (0, 1.3, 0.7), mode="reflect", truncate=4.0)
    got = gaussian_blur(gaussian_blur(x, 1.3, axes=(1,)), 0.7, axes=(2,))
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_block_mean_with_a_partial_last_block():
    x = np.arange(7, dtype=np.float32)[:, None]
    np.testing.assert_allclose(block_mean(x, 3, axis=0)[:, 0], [1.0, 4.0, 6.0])
    np.testing.assert_array_equal(block_mean(x, 1, axis=0), x)


def test_window_and_depth_padding():
    np.testing.assert_allclose(window_hu(np.array([-600.0, 1000.0, -5000.0])), [0, 1, -424 / 1600])
    v = np.ones((3, 2))
    padded = pad_depth(v, 7)
    np.testing.assert_array_equal(padded[:, 0], [0, 0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(pad_depth(np.arange(7), 3), [2, 3, 4])
