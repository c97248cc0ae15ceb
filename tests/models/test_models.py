"""The paper's networks: parameter counts, shapes, BatchNorm state, dropout, LeNet smoothness."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pppml_jax.losses import cross_entropy
from pppml_jax.models import DenseNet3D, DenseNet3DTiny, LeNet, UNet2D, UNet2DTiny


def count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def abstract_variables(model, shape):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape)))


def unet_count_by_hand(in_channels=3, features=16, levels=4, classes=2) -> int:
    """mateuszbuda-style U-Net: [conv3x3 (no bias) + BN(scale, bias)] x 2 per block."""

    def block(cin, cout):
        return 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout

    total, cin = 0, in_channels
    for level in range(levels):
        total += block(cin, features * 2**level)
        cin = features * 2**level
    total += block(cin, features * 2**levels)
    for level in reversed(range(levels)):
        width = features * 2**level
        total += 4 * (2 * width) * width + width  # 2x2 transposed convolution with bias
        total += block(2 * width, width)
    return total + features * classes + classes


def densenet_count_by_hand(growth=32, blocks=(1, 3, 6, 4), bn_size=4, init=32, hidden=20):
    total = 343 * init + 2 * init  # stem conv 7x7x7 from one channel, BN
    channels = init
    for index, layers in enumerate(blocks):
        for _ in range(layers):
            total += 2 * channels + channels * bn_size * growth  # BN + 1x1x1
            total += 2 * bn_size * growth + 27 * bn_size * growth * growth  # BN + 3x3x3
            channels += growth
        if index != len(blocks) - 1:
            total += 2 * channels + channels * (channels // 2)  # transition BN + 1x1x1
            channels //= 2
    total += 2 * channels  # final BN
    return total + channels * hidden + hidden + hidden * 2 + 2, channels


def test_unet2d_default_matches_paper_parameter_count():
    variables = abstract_variables(UNet2D(), (1, 64, 64, 3))
    n = count(variables["params"])
    assert n == unet_count_by_hand()
    assert abs(n - 1.94e6) / 1.94e6 < 0.005  # docs/method.md 2.2: about 1.94M


def test_densenet3d_default_matches_paper_parameter_count():
    variables = abstract_variables(DenseNet3D(), (1, 70, 70, 70, 1))
    expected, final_channels = densenet_count_by_hand()
    assert final_channels == 256  # the paper's head starts at 256 features
    assert count(variables["params"]) == expected
    assert abs(expected - 1.85e6) / 1.85e6 < 0.005  # about 1.85M


def test_group_norm_keeps_the_parameter_count_and_has_no_state():
    for model, shape in ((UNet2D, (1, 32, 32, 3)), (DenseNet3D, (1, 16, 32, 32, 1))):
        batch = abstract_variables(model(), shape)
        group = abstract_variables(model(norm="group"), shape)
        assert set(group) == {"params"}
        assert count(group["params"]) == count(batch["params"])


def test_output_shapes_and_input_checks():
    x = jnp.zeros((2, 70, 70, 70, 1))
    variables = abstract_variables(DenseNet3D(), x.shape)
    out = jax.eval_shape(lambda v, x: DenseNet3D().apply(v, x, train=False), variables, x)
    assert out.shape == (2, 2)
    unet = UNet2D(features=2, levels=2)
    variables = jax.jit(unet.init)(jax.random.key(0), jnp.zeros((1, 12, 8, 3)))
    logits = jax.jit(unet.apply)(variables, jnp.ones((2, 12, 8, 3)))
    assert logits.shape == (2, 12, 8, 2)
    with pytest.raises(ValueError, match="divisible by 4"):
        unet.init(jax.random.key(0), jnp.zeros((1, 10, 8, 3)))
    assert UNet2DTiny().levels == 3 and UNet2DTiny().features == 8
    with pytest.raises(ValueError, match="norm"):
        UNet2D(norm="layer").init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


def test_batchnorm_state_is_updated_in_training_and_read_in_evaluation():
    model = UNet2D(features=4, levels=1)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3)) * 3.0 + 1.0
    variables = jax.jit(model.init)(jax.random.key(0), x[:1])
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    first_mean = updates["batch_stats"]["ConvBlock_0"]["BatchNorm_0"]["mean"]
    # running mean <- 0.9 * 0 + 0.1 * batch mean of the first convolution's output
    kernel = variables["params"]["ConvBlock_0"]["Conv_0"]["kernel"]
    conv = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(first_mean, 0.1 * conv.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    # Evaluation uses the running statistics: every example is processed independently.
    trained = {"params": variables["params"], **updates}
    batch_out = model.apply(trained, x, train=False)
    single = jnp.concatenate([model.apply(trained, x[i : i + 1], train=False) for i in range(4)])
    np.testing.assert_allclose(batch_out, single, rtol=1e-4, atol=1e-4)
    # Training normalises with the batch's own statistics: examples interact.
    train_out, _ = model.apply(trained, x, train=True, mutable=["batch_stats"])
    train_single, _ = model.apply(trained, x[:1], train=True, mutable=["batch_stats"])
    assert not np.allclose(train_out[:1], train_single, atol=1e-3)


def test_densenet_dropout_needs_a_key_in_training_only():
    model = DenseNet3DTiny(head_dropout=0.5, block_config=(1,), growth_rate=4, init_features=4)
    x = jax.random.normal(jax.random.key(2), (2, 4, 8, 8, 1))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    a = model.apply(variables, x, train=False)
    np.testing.assert_array_equal(a, model.apply(variables, x, train=False))
    outs = [
        model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": k})[0]
        for k in (jax.random.key(3), jax.random.key(4))
    ]
    assert not np.allclose(outs[0], outs[1])
    with pytest.raises(Exception, match="dropout"):
        model.apply(variables, x, train=True, mutable=["batch_stats"])


def test_lenet_reference_architecture_and_initialisation():
    model = LeNet(num_classes=10)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))["params"]
    assert params["Dense_0"]["kernel"].shape == (768, 10)  # 12 x 8 x 8 features
    leaves = np.concatenate([np.ravel(p) for p in jax.tree.leaves(params)])
    assert leaves.min() >= -0.5 and leaves.max() <= 0.5
    assert abs(leaves.std() - 0.5 / np.sqrt(3.0)) < 0.01  # U(-0.5, 0.5)
    flax_default = LeNet(init_range=None).init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
    assert not np.any(flax_default["params"]["Conv_0"]["bias"])  # zero biases
    x = jax.random.uniform(jax.random.key(1), (1, 32, 32, 1))
    sigmoid = model.apply({"params": params}, x)
    relu = LeNet(num_classes=10, activation="relu").apply({"params": params}, x)
    custom = LeNet(num_classes=10, activation=jnp.tanh).apply({"params": params}, x)
    assert sigmoid.shape == (1, 10)
    assert not np.allclose(sigmoid, relu) and not np.allclose(sigmoid, custom)
    with pytest.raises(ValueError, match="activation"):
        LeNet(activation="swishy").init(jax.random.key(0), x)


def test_lenet_is_twice_differentiable_for_gradient_matching():
    """The iDLG objective ||grad_theta CE(x) - g||^2 has a gradient in x that matches finite
    differences, and forward-over-reverse Hessian-vector products in theta match too."""
    model = LeNet(num_classes=2)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))["params"]
    x_true = jax.random.uniform(jax.random.key(1), (1, 32, 32, 1))
    label = jnp.array([1])

    def loss(p, x):
        logits = model.apply({"params": p}, x)
        return cross_entropy(logits, label)

    observed = jax.jit(jax.grad(loss))(params, x_true)

    @jax.jit
    def matching(x):
        grads = jax.grad(loss)(params, x)
        diffs = jax.tree.map(lambda a, b: jnp.sum((a - b) ** 2), grads, observed)
        return sum(jax.tree.leaves(diffs))

    x = jax.random.uniform(jax.random.key(2), (1, 32, 32, 1))
    direction = jax.random.normal(jax.random.key(3), x.shape)
    analytic = jnp.vdot(jax.jit(jax.grad(matching))(x), direction)
    eps = 1e-2
    numeric = (matching(x + eps * direction) - matching(x - eps * direction)) / (2 * eps)
    assert np.isfinite(analytic) and abs(analytic) > 0
    np.testing.assert_allclose(analytic, numeric, rtol=2e-2)

    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(4), len(leaves))
    tangent = treedef.unflatten(
        [jax.random.normal(k, p.shape) for k, p in zip(keys, leaves, strict=True)]
    )
    grad_p = jax.jit(jax.grad(loss))
    _, hvp = jax.jit(lambda p, t: jax.jvp(lambda q: grad_p(q, x), (p,), (t,)))(params, tangent)
    eps = 1e-3

    def shifted(sign):
        return grad_p(jax.tree.map(lambda p, t: p + sign * eps * t, params, tangent), x)

    fd = jax.tree.map(lambda a, b: (a - b) / (2 * eps), shifted(1.0), shifted(-1.0))
    hvp_flat = np.concatenate([np.ravel(a) for a in jax.tree.leaves(hvp)])
    fd_flat = np.concatenate([np.ravel(a) for a in jax.tree.leaves(fd)])
    assert np.linalg.norm(hvp_flat - fd_flat) < 0.03 * np.linalg.norm(hvp_flat)


@pytest.mark.parametrize(
    ("strides", "padding", "channels"),
    [
        ((1, 2, 2), ((3, 3), (3, 3), (3, 3)), 1),  # the DenseNet3D stem
        ((2, 1, 2), ((1, 2), (0, 1), (2, 0)), 3),  # depth stride, asymmetric padding
        ((1, 1, 1), ((0, 0), (0, 0), (0, 0)), 2),  # valid padding
    ],
)
def test_unfolded_conv3d_equals_xla_conv3d_and_its_gradient(strides, padding, channels):
    from pppml_jax.models._conv3d import conv3d, unfolded_conv3d

    kx, kk = jax.random.split(jax.random.key(5))
    x = jax.random.normal(kx, (2, 9, 10, 11, channels))
    kernel = jax.random.normal(kk, (3, 5, 4, channels, 4))
    plain = conv3d(x, kernel, strides, padding)
    unfolded = unfolded_conv3d(x, kernel, strides, padding)
    assert unfolded.shape == plain.shape
    np.testing.assert_allclose(unfolded, plain, rtol=1e-5, atol=1e-4)
    cot = jax.random.normal(jax.random.key(6), plain.shape)

    def grads(fn):
        return jax.grad(lambda k, x: jnp.vdot(fn(x, k, strides, padding), cot), (0, 1))(kernel, x)

    for a, b in zip(grads(unfolded_conv3d), grads(conv3d), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_densenet_stem_is_the_same_network_either_way_and_keeps_nn_conv_names():
    x = jax.random.normal(jax.random.key(7), (2, 6, 16, 16, 1))
    models = [DenseNet3DTiny(head_dropout=0.0, stem_unfold=u) for u in (True, False)]
    variables = jax.jit(models[0].init)(jax.random.key(0), x)
    assert variables["params"]["Conv_0"]["kernel"].shape == (7, 7, 7, 1, 8)
    other = jax.jit(models[1].init)(jax.random.key(0), x)
    jax.tree.map(np.testing.assert_array_equal, variables, other)  # same init, same tree
    outs = [m.apply(variables, x, train=False) for m in models]
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)
