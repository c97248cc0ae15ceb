"""Scores, the noise floor and summaries; CT crops and their labels."""

from __future__ import annotations

import numpy as np
import pytest

from pppml_jax.attacks.crops import LUNG_WINDOW_HU, hu_to_unit, select_crops
from pppml_jax.attacks.scoring import noise_floor, scores, summarize
from pppml_jax.experiments.config_attack import attack_config
from pppml_jax.experiments.privacy_config import attack_options


def _image(seed=0, size=32):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] / size
    base = 0.5 + 0.3 * np.sin(6 * x) * np.cos(4 * y) + 0.05 * rng.normal(size=(size, size))
    return np.clip(base, 0, 1).astype(np.float32)[..., None]


def test_scores_clip_to_the_image_range_and_count_non_finite():
    truth = _image()
    beyond = truth + 5.0  # clipped to all-ones
    assert scores(beyond, truth) == scores(np.ones_like(truth), truth)
    broken = truth.copy()
    broken[0, 0, 0] = np.nan
    fixed = truth.copy()
    fixed[0, 0, 0] = 0.5
    got = scores(broken, truth)
    assert got["nonfinite"] == 1
    assert got["psnr"] == scores(fixed, truth)["psnr"]
    mse = float(np.mean((fixed - truth) ** 2))
    assert got["mse"] == pytest.approx(mse, rel=1e-5)
    assert got["psnr"] == pytest.approx(10 * np.log10(1 / mse), rel=1e-5)


def test_noise_floor_matches_its_closed_forms():
    truth = _image(1)
    floor = noise_floor(truth, draws=64, seed=0)
    grey_mse = float(np.mean((0.5 - truth) ** 2))
    assert floor["psnr_grey"] == pytest.approx(10 * np.log10(1 / grey_mse), rel=1e-5)
    # E[(u - t)^2] = 1/3 - t + t^2 for u ~ U[0, 1): the median draw is close to it.
    expected = 10 * np.log10(1 / float(np.mean(1 / 3 - truth + truth**2)))
    assert floor["psnr_random"] == pytest.approx(expected, abs=0.3)
    assert floor["psnr_random_max"] >= floor["psnr_random"]
    assert floor["psnr"] == max(floor["psnr_random_max"], floor["psnr_grey"])
    assert floor["ssim"] == max(floor["ssim_random_max"], floor["ssim_grey"])
    assert abs(floor["ssim_random"]) < 0.1  # random pixels share no structure with the image
    assert noise_floor(truth, draws=64, seed=0) == floor  # deterministic
    with pytest.raises(ValueError, match="draws"):
        noise_floor(truth, draws=0)


def test_summarize_statistics():
    rows = [(50.0, 1.0, 1e-5, True), (8.0, 0.1, 0.1, False), (12.0, 0.1, 0.06, True)]
    records = [
        {"psnr": p, "ssim": s, "mse": m, "label_correct": c, "floor_psnr": 10.0, "floor_ssim": 0.2}
        for p, s, m, c in rows
    ]
    out = summarize(records)
    assert out["n"] == 3
    assert out["psnr_median"] == 12.0 and out["psnr_min"] == 8.0 and out["psnr_max"] == 50.0
    assert out["label_accuracy"] == pytest.approx(2 / 3)
    assert out["above_floor"] == pytest.approx(2 / 3)  # 50 dB and 12 dB beat 10 dB
    assert summarize([]) == {"n": 0}


def test_hu_window_closed_form():
    low, high = LUNG_WINDOW_HU
    hu = np.array([low - 100, low, (low + high) / 2, high, high + 100])
    np.testing.assert_allclose(hu_to_unit(hu), [0, 0, 0.5, 1, 1])
    with pytest.raises(ValueError, match="window"):
        hu_to_unit(hu, window=(0, 0))


def _phantom_slices():
    """Four 64x64 slices: air, a body disk at -100 HU, lesions (mask) in slices 1 and 3."""
    y, x = np.mgrid[:64, :64]
    body = (y - 32) ** 2 + (x - 32) ** 2 < 28**2
    hu = np.where(body, -100.0, -1000.0)[None].repeat(4, axis=0).astype(np.float32)
    hu += np.random.default_rng(0).normal(0, 20, hu.shape).astype(np.float32)
    masks = np.zeros(hu.shape, np.uint8)
    masks[1, 20:30, 20:30] = 1
    masks[3, 34:44, 30:40] = 1
    return hu, masks


def test_crops_labels_body_and_balance():
    hu, masks = _phantom_slices()
    crops = select_crops(hu, masks, 8, size=16, stride=4, seed=0)
    assert crops.images.shape == (8, 16, 16, 1) and crops.images.dtype == np.float32
    assert crops.images.min() >= 0.0 and crops.images.max() <= 1.0
    assert int(crops.labels.sum()) == 4  # half with a lesion
    for image, label, source in zip(crops.images, crops.labels, crops.sources, strict=True):
        s, y, x = (int(tok[1:]) for tok in source.split())
        window = (slice(y, y + 16), slice(x, x + 16))
        assert int(masks[s][window].sum() >= 8) == label  # recomputed from the mask
        assert (hu[s][window] > -950).mean() >= 0.95  # inside the body
        np.testing.assert_array_equal(image[..., 0], hu_to_unit(hu[s][window]))
    again = select_crops(hu, masks, 8, size=16, stride=4, seed=0)
    assert again.sources == crops.sources
    other = select_crops(hu, masks, 8, size=16, stride=4, seed=1)
    assert other.sources != crops.sources


def test_crops_refuse_impossible_requests():
    hu, masks = _phantom_slices()
    with pytest.raises(ValueError, match="candidate crops"):
        select_crops(hu, masks, 10_000, size=16)
    with pytest.raises(ValueError, match="exceeds"):
        select_crops(hu, masks, 2, size=128)
    with pytest.raises(ValueError, match="must both be"):
        select_crops(hu, masks[:2], 2, size=16)


def test_a_partial_mapping_config_reaches_the_attack_with_defaults_filled_in():
    # evaluate()'s mapping path: the typed config fills the defaults and keeps free-form
    # backend options; attack_options turns its to_dict() into idlg's keyword options.
    cfg = attack_config(
        {"attack": {"steps": 5}, "views": {"backend_options": {"preset": "wide"}}}
    ).to_dict()
    assert cfg["views"]["backend_options"] == {"preset": "wide"}
    opts = attack_options(cfg)
    assert opts["steps"] == 5 and opts["restarts"] == 1 and opts["max_move"] == 0.5
    assert set(opts) == set(cfg["attack"])
    assert (
        attack_options(attack_config({"attack": {"max_move": None}}).to_dict())["max_move"] is None
    )
    with pytest.raises(ValueError, match=r"attack\.stepz"):
        attack_config({"attack": {"stepz": 5}})
    with pytest.raises(ValueError, match="must be a mapping"):
        attack_config({"attack": 3})


@pytest.mark.parametrize("num", [1, 2, 3, 7])
def test_crops_return_exactly_num(num):
    hu, masks = _phantom_slices()
    crops = select_crops(hu, masks, num, size=16, stride=4, seed=0)
    assert len(crops.labels) == len(crops.sources) == crops.images.shape[0] == num
    assert int(crops.labels.sum()) == num // 2


def test_crops_come_from_distinct_groups_first():
    """Slices 0-1 and 2-3 are two patients: two crops of one label come from both patients."""
    hu, masks = _phantom_slices()
    masks[:] = 0  # every crop has label 0
    for seed in range(5):
        crops = select_crops(hu, masks, 2, groups=["p0", "p0", "p1", "p1"], size=16, seed=seed)
        slices = sorted(int(src.split()[0][1:]) for src in crops.sources)
        assert slices[0] in (0, 1) and slices[1] in (2, 3)
    with pytest.raises(ValueError, match="one entry per slice"):
        select_crops(hu, masks, 2, groups=["p0"], size=16)
