"""Selective encryption: which leaves are encrypted, and that mixed rounds stay exact."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from _secure_helpers import random_tree, weighted_mean

import pppml_jax.secure as sec
from pppml_jax.secure.tree import first_and_last_layers, select_leaves

NAMES = [
    "params/Conv_0/bias",
    "params/Conv_0/kernel",
    "params/Conv_10/kernel",
    "params/Conv_2/kernel",
    "params/Dense_0/kernel",
]
SHAPES = [(4,), (3, 3, 1, 4), (3, 3), (3, 3), (4, 5)]
MODEL = {
    "params": {
        "Conv_0": {"kernel": (3, 3, 1, 4), "bias": (4,)},
        "Conv_2": {"kernel": (3, 3)},
        "Conv_10": {"kernel": (3, 3)},
        "Dense_0": {"kernel": (4, 5)},
    }
}


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_key_path_names_follow_the_documented_format():
    tree = {"params": {"Conv_0": {"kernel": 1}}, "stats": [2, (3,)]}
    paths = [sec.key_path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert paths == ["params/Conv_0/kernel", "stats/0", "stats/1/0"]


def test_patterns_auto_and_defaults():
    assert select_leaves(NAMES, SHAPES, None, auto_max_values=10) == (True,) * 5
    assert select_leaves(NAMES, SHAPES, [], auto_max_values=10) == (False,) * 5
    assert select_leaves(NAMES, SHAPES, ["params/Conv_0/*"], auto_max_values=10) == (
        True,
        True,
        False,
        False,
        False,
    )
    assert select_leaves(NAMES, SHAPES, ["*/kernel"], auto_max_values=10) == (
        False,
        True,
        True,
        True,
        True,
    )
    # auto: small updates are encrypted whole; large ones keep the first and last layers,
    # in natural order (Conv_2 comes before Conv_10).
    assert select_leaves(NAMES, SHAPES, "auto", auto_max_values=1000) == (True,) * 5
    assert first_and_last_layers(NAMES) == (True, True, False, False, True)
    assert first_and_last_layers(["a/Conv_10/k", "a/Conv_2/k", "a/Conv_9/k"]) == (True, True, False)
    # With shapes, layers without a kernel (normalisation) are skipped: the pppml U-Net's
    # names put ConvBlock_0/BatchNorm_0 first, but its first convolution is the input layer.
    unet_names = [
        "params/ConvBlock_0/BatchNorm_0/bias",
        "params/ConvBlock_0/Conv_0/kernel",
        "params/ConvTranspose_0/kernel",
        "params/Conv_0/bias",
        "params/Conv_0/kernel",
    ]
    unet_shapes = [(16,), (3, 3, 3, 16), (2, 2, 32, 16), (2,), (1, 1, 16, 2)]
    assert first_and_last_layers(unet_names, unet_shapes) == (False, True, False, True, True)
    with pytest.raises(sec.InvalidOptionError, match="matches no leaf"):
        select_leaves(NAMES, SHAPES, ["params/Conv_1/*"], auto_max_values=10)
    with pytest.raises(sec.InvalidOptionError):
        select_leaves(NAMES, SHAPES, "first", auto_max_values=10)


@pytest.mark.parametrize("backend", ["bfv", "ckks"])
def test_mixed_round_is_within_bound_and_leaks_nothing(backend):
    rng = np.random.default_rng(0)
    updates = [random_tree(rng, MODEL) for _ in range(4)]
    weights = [3, 1, 4, 1]
    res = sec.cyclic_aggregate(
        updates, weights, backend=backend, encrypt=["params/Conv_0/*"], round_index=1
    )
    assert res.stats.encrypted_params == 40 and res.stats.masked_params == 38
    assert set(res.stats.scales) == {"encrypted", "masked"}
    ref = weighted_mean(updates, weights)
    for g, r in zip(_leaves(res.aggregate), ref, strict=True):
        assert np.max(np.abs(g - r)) <= res.stats.error_bound
    payloads = [m.payload for m in res.transcript]
    for u in updates:
        for leaf in _leaves(u):
            assert not any(leaf.tobytes()[:16] in p for p in payloads)


def test_concrete_encrypts_first_and_last_layers_of_large_models():
    rng = np.random.default_rng(1)
    updates = [random_tree(rng, MODEL) for _ in range(3)]
    agg = sec.SecureAggregator("concrete", bits=10, chunk_size=32, max_parties=4)
    res = agg.aggregate(updates, [1, 2, 3], auto_max_values=50, round_index=0)
    # first layer Conv_0 (4 + 36 values) and last layer Dense_0 (20 values)
    assert res.stats.encrypted_params == 60 and res.stats.masked_params == 18
    ref = weighted_mean(updates, [1, 2, 3])
    for g, r in zip(_leaves(res.aggregate), ref, strict=True):
        assert np.max(np.abs(g - r)) <= res.stats.error_bound


def test_per_leaf_layout_costs_more_ciphertexts_but_gives_the_same_sum():
    rng = np.random.default_rng(2)
    updates = [random_tree(rng, MODEL) for _ in range(3)]
    agg = sec.SecureAggregator("bfv")
    flat = agg.aggregate(updates, [1, 1, 1], layout="flat", round_index=0)
    per_leaf = agg.aggregate(updates, [1, 1, 1], layout="per_leaf", round_index=1)
    assert per_leaf.stats.ring_bytes > 4 * flat.stats.ring_bytes  # 5 ciphertexts instead of 1
    for a, b in zip(_leaves(flat.aggregate), _leaves(per_leaf.aggregate), strict=True):
        np.testing.assert_array_equal(a, b)
