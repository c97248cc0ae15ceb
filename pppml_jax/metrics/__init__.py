"""Metrics, pure JAX: Dice (segmentation), accuracy and AUC (classification), MSE / PSNR / SSIM.

Per-image metrics return one value per image (batched over leading axes), so they serve as the
engine's ``eval_fn(params, batch) -> [B]``; reduce with ``jnp.mean`` (or ``jnp.nanmean``).
"""

from pppml_jax.metrics.classification import accuracy, auc, correct_predictions
from pppml_jax.metrics.image import gaussian_window, mse, psnr, ssim
from pppml_jax.metrics.segmentation import EMPTY_SCORE, dice, dice_from_logits

__all__ = [
    "EMPTY_SCORE",
    "accuracy",
    "auc",
    "correct_predictions",
    "dice",
    "dice_from_logits",
    "gaussian_window",
    "mse",
    "psnr",
    "ssim",
]
