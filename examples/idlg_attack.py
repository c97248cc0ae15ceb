"""iDLG against your own model: recover a training image and its label from one gradient.

A user-defined two-layer sigmoid network (plain JAX, no Flax) classifies 8x8 images into 4
classes. A client computes the gradient of its loss on one private image, as plain FedAvg
would send it. The attacker, who knows the model and sees only the gradient, infers the label
with iDLG's sign rule (``pj.attacks.infer_label``) and reconstructs the image by gradient
matching (``pj.attacks.idlg``). Secure aggregation exists to hide exactly this gradient.

Run: ``python examples/idlg_attack.py`` (a few seconds on a CPU).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pppml_jax as pj

SHAPE, HIDDEN, CLASSES = (8, 8, 1), 64, 4


def init_params(seed: int = 0) -> dict[str, dict[str, jax.Array]]:
    """Parameters in creation order (the last 2-D leaf is the output layer's kernel)."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    size = int(np.prod(SHAPE))
    hidden = {"kernel": 0.5 * jax.random.normal(k1, (size, HIDDEN)), "bias": jnp.zeros(HIDDEN)}
    out = {"kernel": 0.5 * jax.random.normal(k2, (HIDDEN, CLASSES)), "bias": jnp.zeros(CLASSES)}
    return {"hidden": hidden, "out": out}


def loss_fn(params, x, label):
    """Cross-entropy of one example ``x`` of ``SHAPE`` with an integer ``label``."""
    h = jax.nn.sigmoid(x.reshape(-1) @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    logits = h @ params["out"]["kernel"] + params["out"]["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, label)


def private_image(seed: int = 1) -> np.ndarray:
    """A smooth 8x8 image in [0, 1] (the client's secret)."""
    y, x = np.mgrid[:8, :8] / 8.0
    rng = np.random.default_rng(seed)
    image = 0.5 + 0.4 * np.sin(3 * x + rng.uniform()) * np.cos(2 * y + rng.uniform())
    return image.astype(np.float32)[..., None]


def main() -> dict[str, float]:
    """Attacks one gradient; returns the true and inferred labels and the reconstruction PSNR."""
    params, image, label = init_params(), private_image(), 2
    grads = jax.grad(loss_fn)(params, jnp.asarray(image), jnp.asarray(label))  # what is sent
    inferred = pj.attacks.infer_label(grads)
    rec = pj.attacks.idlg(
        loss_fn, params, grads, input_shape=SHAPE, num_classes=CLASSES, steps=500, seed=0
    )
    psnr = float(pj.metrics.psnr(jnp.clip(rec.image, 0, 1), image, data_range=1.0))
    return {"true_label": label, "inferred_label": int(inferred), "idlg_label": rec.label,
            "psnr_db": psnr}  # fmt: skip


if __name__ == "__main__":
    summary = main()
    print(f"true label {summary['true_label']}, sign rule says {summary['inferred_label']}, "
          f"iDLG says {summary['idlg_label']}")  # fmt: skip
    print(f"reconstruction PSNR against the private image: {summary['psnr_db']:.1f} dB")
