"""Parameter paths, path predicates, and split/merge of a params pytree."""

import jax.numpy as jnp
import pytest

from pppml_jax.algorithms.partition import (
    last_top_level,
    merge,
    path_predicate,
    paths,
    split,
)

PARAMS = {
    "Dense_0": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)},
    "BatchNorm_0": {"scale": jnp.ones(2), "bias": jnp.zeros(2)},
    "Dense_1": {"kernel": jnp.ones((2, 1)), "bias": jnp.zeros(1)},
}


def test_paths_are_slash_joined_keys():
    assert sorted(paths(PARAMS)) == sorted(
        [
            "Dense_0/kernel",
            "Dense_0/bias",
            "BatchNorm_0/scale",
            "BatchNorm_0/bias",
            "Dense_1/kernel",
            "Dense_1/bias",
        ]
    )
    assert paths({"a": [jnp.ones(1), (jnp.ones(1),)]}) == ["a/0", "a/1/0"]


@pytest.mark.parametrize(
    "spec",
    ["BatchNorm", ["BatchNorm"], ("Batch", "Norm_"), lambda p: p.startswith("BatchNorm_0/")],
)
def test_split_by_each_kind_of_spec_and_merge_back(spec):
    shared, personal = split(PARAMS, path_predicate(spec))
    assert personal["BatchNorm_0"]["scale"] is not None and shared["BatchNorm_0"]["scale"] is None
    assert personal["Dense_0"]["kernel"] is None and shared["Dense_0"]["kernel"] is not None
    assert personal["Dense_1"]["bias"] is None
    back = merge(shared, personal)
    assert paths(back) == paths(PARAMS)
    for layer, leaves in PARAMS.items():
        for name, leaf in leaves.items():
            assert back[layer][name] is leaf


def test_split_matching_nothing_or_everything():
    shared, personal = split(PARAMS, path_predicate("nothing-has-this"))
    assert paths(personal) == [] and paths(shared) == paths(PARAMS)
    shared, personal = split(PARAMS, lambda p: True)
    assert paths(shared) == [] and paths(personal) == paths(PARAMS)


@pytest.mark.parametrize("bad", ["", [], [3], 7, None])
def test_a_bad_spec_is_refused_naming_the_argument(bad):
    with pytest.raises(ValueError, match="head="):
        path_predicate(bad, argument="head")


def test_default_head_is_the_top_level_key_that_sorts_last_numbers_as_numbers():
    pick = last_top_level(PARAMS)
    assert sorted(p for p in paths(PARAMS) if pick(p)) == ["Dense_1/bias", "Dense_1/kernel"]
    many = {f"Dense_{i}": {"w": jnp.ones(1)} for i in range(12)}
    assert [p for p in paths(many) if last_top_level(many)(p)] == ["Dense_11/w"]
    # independent of the dict's order (jax.tree rebuilds dicts sorted), and no prefix matches
    params = {"Dense_1": {"w": jnp.ones(1)}, "Dense_10x": {"w": jnp.ones(1)}, "A": {}}
    assert [p for p in paths(params) if last_top_level(params)(p)] == ["Dense_10x/w"]
    assert not last_top_level(params)("Dense_1/w")
    with pytest.raises(ValueError, match="head=None"):
        last_top_level([jnp.ones(2)])
