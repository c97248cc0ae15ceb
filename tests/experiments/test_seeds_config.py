"""``seeds`` in configs, ``with_seeds`` and ``--seeds``: counts, lists and refusals by key."""

import pytest

from pppml_jax.cli.run import seeds_override
from pppml_jax.experiments.config import ConfigError, apply_overrides, validate

BASE = {
    "name": "t",
    "data": {"name": "synthetic_chest_ct", "options": {"task": "segmentation"}},
    "model": {"name": "UNet2D"},
    "training": {"rounds": 3, "lr": 0.1},
    "algorithms": ["fedavg"],
}


def test_a_count_starts_at_seed_and_a_list_is_taken_as_it_is():
    assert validate(BASE).seeds == (0,)
    assert validate({**BASE, "seed": 4, "seeds": 3}).seeds == (4, 5, 6)
    config = validate({**BASE, "seeds": [7, 2]})
    assert (config.seed, config.seeds) == (7, (7, 2))
    assert validate(config.to_dict()).seeds == (7, 2)  # to_dict round-trips
    assert config.federation_config("fedavg", seed=2).seed == 2
    assert config.federation_config("fedavg").seed == 7


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        (0, "seeds=0 must be a count"),
        (True, "must be a count"),
        ([], "at least one seed"),
        ([1, 1], "names a seed twice"),
        ([1, -2], r"seeds\[1\]=-2 must be an integer >= 0"),
        ("3", "must be a count"),
    ],
)
def test_bad_seeds_are_refused_by_key(seeds, message):
    with pytest.raises(ConfigError, match=message):
        validate({**BASE, "seeds": seeds})


def test_seed_must_be_the_first_of_a_list():
    with pytest.raises(ConfigError, match="seed=1 differs from the first of seeds"):
        validate({**BASE, "seed": 1, "seeds": [2, 3]})


def test_with_seeds_and_the_cli_flag():
    config = validate({**BASE, "seed": 2})
    assert config.with_seeds(3).seeds == (2, 3, 4)
    assert config.with_seeds([9, 1]).seeds == (9, 1) and config.with_seeds([9, 1]).seed == 9
    with pytest.raises(ConfigError):
        config.with_seeds(0)
    assert validate(apply_overrides({**BASE, "seed": 2}, seeds_override("3"))).seeds == (2, 3, 4)
    raw = apply_overrides({**BASE, "seed": 2}, seeds_override("5, 0"))
    assert validate(raw).seeds == (5, 0)
    assert seeds_override(None) == []
