"""Scores of a reconstruction (MSE, PSNR, SSIM) and the noise floor an uninformed guess reaches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pppml_jax.metrics import mse, psnr, ssim


def _clean(reconstruction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(reconstruction clipped to [0, 1] with non-finite pixels set to 0.5, non-finite mask)``."""
    rec = np.asarray(reconstruction, np.float32)
    bad = ~np.isfinite(rec)
    return np.clip(np.where(bad, 0.5, rec), 0.0, 1.0), bad


def scores(reconstruction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """``{"mse", "psnr", "ssim", "nonfinite"}`` of a reconstruction against the truth.

    The reconstruction is clipped to the image range ``[0, 1]`` first (the attacker knows the
    range, so this can only help it; a diverged reconstruction then scores like an
    uninformed guess instead of hundreds of dB below one), and non-finite pixels are set to
    mid-grey 0.5 (``nonfinite`` counts them).

    Args:
      reconstruction: ``[H, W, C]`` recovered image, as the attack returned it.
      truth: ``[H, W, C]`` image in ``[0, 1]`` (``data_range=1.0``).

    Returns:
      MSE, PSNR (dB) and SSIM of the clipped reconstruction, and the non-finite count.
    """
    rec, bad = _clean(reconstruction)
    a, b = jnp.asarray(rec), jnp.asarray(truth, jnp.float32)
    return {
        "mse": float(mse(a, b)),
        "psnr": float(psnr(a, b, data_range=1.0)),
        "ssim": float(ssim(a, b, data_range=1.0)),
        "nonfinite": int(bad.sum()),
    }


def psnr_score(reconstruction: np.ndarray, truth: np.ndarray) -> float:
    """The ``"psnr"`` of :func:`scores` alone (same clipping and cleaning), without the SSIM."""
    rec, _ = _clean(reconstruction)
    return float(psnr(jnp.asarray(rec), jnp.asarray(truth, jnp.float32), data_range=1.0))


def noise_floor(truth: np.ndarray, *, draws: int = 64, seed: int = 0) -> dict[str, float]:
    """The best scores that guesses carrying no information about ``truth`` reach.

    Two kinds of uninformed guess: ``draws`` images of independent ``U[0, 1)`` pixels (the
    attack's own starting point) and the constant mid-grey image 0.5 (their mean). PSNR
    barely varies between random draws, SSIM does (a 32x32 image has few 11x11 windows), so
    the floor is the best of all guesses, not a typical one: a reconstruction that does not
    beat it in PSNR or SSIM has revealed nothing measurable about the image.

    Args:
      truth: ``[H, W, C]`` image in ``[0, 1]``.
      draws: random images drawn.
      seed: seed of the draws.

    Returns:
      ``psnr_random`` / ``ssim_random`` (medians over the draws), ``psnr_random_max`` /
      ``ssim_random_max`` (best draws), ``psnr_grey`` / ``ssim_grey``, and the floor
      ``psnr`` / ``ssim`` (the best of each).
    """
    if not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws={draws!r} must be a positive int")
    t = jnp.asarray(truth, jnp.float32)
    guesses = jax.random.uniform(jax.random.key(seed), (draws, *t.shape), jnp.float32)
    targets = jnp.broadcast_to(t, guesses.shape)
    p_rand = np.asarray(psnr(guesses, targets, data_range=1.0))
    s_rand = np.asarray(ssim(guesses, targets, data_range=1.0))
    grey = jnp.full_like(t, 0.5)
    p_grey = float(psnr(grey, t, data_range=1.0))
    s_grey = float(ssim(grey, t, data_range=1.0))
    return {
        "psnr_random": float(np.median(p_rand)),
        "ssim_random": float(np.median(s_rand)),
        "psnr_random_max": float(np.max(p_rand)),
        "ssim_random_max": float(np.max(s_rand)),
        "psnr_grey": p_grey,
        "ssim_grey": s_grey,
        "psnr": max(float(np.max(p_rand)), p_grey),
        "ssim": max(float(np.max(s_rand)), s_grey),
    }


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median / mean / min / max of PSNR and SSIM, MSE median, label accuracy, over records.

    Args:
      records: dicts with ``psnr``, ``ssim``, ``mse`` and optionally ``label_correct`` and
        ``floor_psnr`` / ``floor_ssim`` (the image's noise floor).

    Returns:
      A JSON-ready dict (``n``, ``psnr_median``, ...; ``above_floor``: share of records whose
      PSNR or SSIM beats their noise floor, i.e. that revealed something measurable).
    """
    if not records:
        return {"n": 0}
    p = np.array([r["psnr"] for r in records], np.float64)
    s = np.array([r["ssim"] for r in records], np.float64)
    m = np.array([r["mse"] for r in records], np.float64)
    out: dict[str, Any] = {
        "n": len(records),
        "psnr_median": float(np.median(p)),
        "psnr_mean": float(np.mean(p)),
        "psnr_min": float(np.min(p)),
        "psnr_max": float(np.max(p)),
        "ssim_median": float(np.median(s)),
        "ssim_min": float(np.min(s)),
        "ssim_max": float(np.max(s)),
        "mse_median": float(np.median(m)),
    }
    if all("label_correct" in r for r in records):
        out["label_accuracy"] = float(np.mean([bool(r["label_correct"]) for r in records]))
    if all("psnr_each_client" in r for r in records):
        out["psnr_best_client_median"] = float(
            np.median([max(r["psnr_each_client"]) for r in records])
        )
    if all("floor_psnr" in r for r in records):
        floor = np.array([r["floor_psnr"] for r in records], np.float64)
        floor_s = np.array([r["floor_ssim"] for r in records], np.float64)
        out["floor_psnr_median"] = float(np.median(floor))
        out["floor_ssim_median"] = float(np.median(floor_s))
        out["above_floor"] = float(np.mean((p > floor) | (s > floor_s)))
    return out
