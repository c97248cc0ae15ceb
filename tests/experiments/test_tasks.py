"""Task functions: losses and metrics per task, stateful models, dropout keys per batch."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pppml_jax as pj
from pppml_jax.experiments.tasks import task_functions


class DropoutNet(nn.Module):
    """A classifier with dropout: training needs a "dropout" key."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(16)(x.reshape(x.shape[0], -1))
        x = nn.Dropout(0.5, deterministic=not train)(x)
        return nn.Dense(2)(x)


def clients(n=3, size=20, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {
            "image": rng.normal(size=(size, 4, 4, 1)).astype(np.float32),
            "label": rng.integers(0, 2, size=size).astype(np.int32),
        }
        for _ in range(n)
    ]


def test_dropout_models_read_a_fresh_key_from_every_batch():
    model = DropoutNet()
    x = jnp.zeros((1, 4, 4, 1))
    variables = model.init(jax.random.key(0), x)
    fns = task_functions("classification", model, variables, sample=x)
    assert fns.batch_rng == "rng" and not fns.stateful
    batch = {k: jnp.asarray(v[:8]) for k, v in clients(1)[0].items()}
    key_a = jax.random.key_data(jax.random.key(1))
    key_b = jax.random.key_data(jax.random.key(2))
    loss_a = fns.loss(variables["params"], {**batch, "rng": key_a})
    assert loss_a == fns.loss(variables["params"], {**batch, "rng": key_a})
    assert loss_a != fns.loss(variables["params"], {**batch, "rng": key_b})
    # inference needs no key and is deterministic
    np.testing.assert_array_equal(
        fns.per_example(variables["params"], batch), fns.per_example(variables["params"], batch)
    )


def test_federation_with_dropout_is_reproducible():
    model = DropoutNet()
    x = jnp.zeros((1, 4, 4, 1))
    variables = model.init(jax.random.key(0), x)
    fns = task_functions("classification", model, variables, sample=x)
    kw = {"rounds": 2, "local_steps": 2, "batch_size": 4, "batch_rng": fns.batch_rng}
    a = pj.federation.run(fns.loss, variables["params"], clients(), **kw)
    b = pj.federation.run(fns.loss, variables["params"], clients(), **kw)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(KeyError):  # without batch_rng the loss finds no key
        pj.federation.run(fns.loss, variables["params"], clients(), rounds=1)


def test_models_without_dropout_need_no_key():
    model = pj.models.SmallCNN()
    x = jnp.zeros((1, 8, 8, 1))
    fns = task_functions("classification", model, model.init(jax.random.key(0), x), sample=x)
    assert fns.batch_rng is None and fns.metric == "accuracy"
    with pytest.raises(ValueError, match="task='detection'"):
        task_functions("detection", model, model.init(jax.random.key(0), x))
