"""The privacy experiment's typed config: defaults, the shipped file, refusals at load."""

from pathlib import Path

import pytest

from pppml_jax.experiments.config_attack import (
    AttackConfig,
    attack_config,
    load_attack_config,
)
from pppml_jax.experiments.config_schema import ConfigError

SHIPPED = Path(__file__).parents[2] / "configs" / "attack.yaml"


def test_the_shipped_config_loads_and_overrides_apply():
    config = load_attack_config(SHIPPED, ["views.backend=plain", "attack.steps=5"])
    assert isinstance(config, AttackConfig)
    assert config.views.backend == "plain" and config.attack.steps == 5
    assert config.attack.restarts == 2 and config.data.window_hu == (-1000.0, 400.0)
    plain = config.to_dict()
    assert plain["data"]["window_hu"] == [-1000.0, 400.0] and plain["views"]["weights"] is None
    assert attack_config(plain) == config


def test_missing_keys_take_defaults():
    config = attack_config({"reference": {"images": 2}})
    assert config.reference.images == 2 and config.reference.datasets == ("synthetic", "real_ct")
    assert attack_config(None) == AttackConfig()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("attack.stepz=3", r"unknown key 'attack\.stepz'; accepted keys here: steps"),
        ("attack.steps=true", r"attack\.steps=True must be an integer"),
        ("attack.solver=adam", r"attack\.solver='adam' is not accepted; use one of 'lbfgs'"),
        (
            "views.backend=rsa",
            r"views\.backend='rsa' is not a secure backend; use one of plain, bfv",
        ),
        ("views.backend_options={clipp: 1}", r"unknown key 'views\.backend_options\.clipp'"),
        ("views.backend_options={preset: 3}", r"views\.backend_options\.preset=3 must be a string"),
        (
            "views.backend_options={preset: nope}",
            r"views\.backend_options\.preset='nope': bfv presets are \['compact', 'wide'\]",
        ),
        (
            "views.backend_options={bits: 99}",
            r"views\.backend_options\.bits=99: bfv plaintext modulus needs 16 to 40 bits",
        ),
        (
            "views.backend_options={rotate_every: 0}",
            r"views\.backend_options\.rotate_every=0 must be null or >= 1",
        ),
        (
            "data.synthetic.profiles=nope",
            r"data\.synthetic\.profiles='nope' is not a preset; use one of .*quickstart",
        ),
        ("views.clients=2", r"views\.clients=2 must be >= 3"),
        ("views.weights=[1, 2]", r"views\.weights has 2 entries for views\.clients=3"),
        ("reference.datasets=[mnist]", r"reference\.datasets='mnist' is not accepted"),
        ("data.real_ct.download=maybe", r"data\.real_ct\.download='maybe' must be a boolean"),
        ("data.window_hu=[400, -1000]", r"data\.window_hu=.*low < high"),
        ("noise_floor.draws=0", r"noise_floor\.draws=0 must be >= 1"),
        ("model=3", r"model must be a mapping with keys num_classes"),
    ],
)
def test_bad_values_are_refused_with_their_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_attack_config(SHIPPED, [override])


def test_good_backend_options_and_profiles_load():
    config = load_attack_config(
        SHIPPED,
        [
            "views.backend_options={preset: wide, max_parties: 16}",
            "data.synthetic.profiles=identical",
        ],
    )
    assert config.views.backend_options == {"preset": "wide", "max_parties": 16}
    assert config.data.synthetic.profiles == "identical"
    plain = load_attack_config(SHIPPED, ["views.backend=plain", "views.backend_options={bits: 16}"])
    assert plain.views.backend_options == {"bits": 16}
