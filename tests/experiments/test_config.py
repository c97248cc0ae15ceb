"""Config files: --set overrides, validation messages, per-algorithm FederationConfig."""

import flax.linen as nn
import numpy as np
import pytest

from pppml_jax.experiments.config import (
    ConfigError,
    apply_overrides,
    federation_config,
    load_config,
    parse_override,
    validate,
)
from pppml_jax.experiments.runner import build_model

BASE = {
    "name": "t",
    "data": {"name": "synthetic_chest_ct", "options": {"task": "segmentation"}},
    "model": {"name": "UNet2D"},
    "training": {"rounds": 3, "lr": 0.1},
    "algorithms": ["fedavg", "perfedavg"],
    "overrides": {"perfedavg": {"variant": "hf", "beta": 0.01}},
}


def test_parse_override_types():
    assert parse_override("training.rounds=5") == (["training", "rounds"], 5)
    assert parse_override("training.lr=1e-3") == (["training", "lr"], 1e-3)
    assert parse_override("algorithms=[fedavg, local]") == (["algorithms"], ["fedavg", "local"])
    assert parse_override("overrides.pppml.secure={backend: bfv}") == (
        ["overrides", "pppml", "secure"],
        {"backend": "bfv"},
    )
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("training.rounds")


def test_apply_overrides_creates_and_replaces_without_touching_the_input():
    out = apply_overrides(BASE, ["training.rounds=7", "overrides.fedavg.lr=0.5"])
    assert out["training"]["rounds"] == 7 and out["overrides"]["fedavg"] == {"lr": 0.5}
    assert BASE["training"]["rounds"] == 3 and "fedavg" not in BASE["overrides"]
    with pytest.raises(ConfigError, match="'name' is not a mapping"):
        apply_overrides(BASE, ["name.x=1"])


def test_federation_config_merges_training_and_overrides():
    config = validate(BASE)
    assert config.labels == ("fedavg", "perfedavg")
    fed = federation_config(config, "perfedavg")
    assert (fed.rounds, fed.lr, fed.variant, fed.beta, fed.algorithm) == (
        3,
        0.1,
        "hf",
        0.01,
        "perfedavg",
    )
    assert federation_config(config, "fedavg").variant == "fo"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 3}, "unknown top-level key 'epochs'"),
        ({"training": {"rounds": 3, "learning_rate": 0.1}}, "learning_rate"),
        ({"algorithms": ["fedprx"]}, "fedprx"),
        ({"overrides": {"fedprx": {}}}, "fedprx"),
        ({"model": {"options": {}}}, "model must be a mapping with a 'name'"),
        ({"seed": "zero"}, "seed='zero'"),
        ({"evaluation": {"empty_masks": "zero"}}, "empty_masks='zero' is not accepted; use one of"),
    ],
)
def test_validation_names_the_problem(change, message):
    with pytest.raises(ConfigError, match=message):
        validate({**BASE, **change})


def test_bad_values_fail_at_load_naming_the_key():
    with pytest.raises(ConfigError, match=r"training\.rounds=0 must be an integer >= 1"):
        validate({**BASE, "training": {"rounds": 0}})
    with pytest.raises(ConfigError, match=r"overrides\.perfedavg\.beta=-1"):
        validate({**BASE, "overrides": {"perfedavg": {"beta": -1}}})


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_shipped_configs_are_valid():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
    assert configs, "no configs/*.yaml found"
    for path in configs:
        if path.name == "attack.yaml":  # read by `pppml attack`, not `pppml run`
            continue
        config = load_config(path)
        for algorithm in config.labels:
            federation_config(config, algorithm)
        model = build_model(config.model, num_classes=2)
        assert isinstance(model, nn.Module), (path.name, type(model))


def test_build_model_accepts_the_partial_presets_and_names_unknown_ones():
    tiny = build_model({"name": "DenseNet3DTiny"}, num_classes=3)
    assert isinstance(tiny, nn.Module) and tiny.growth_rate == 8 and tiny.num_classes == 3
    with pytest.raises(ValueError, match=r"'ResNet50' is not in pppml_jax\.models"):
        build_model({"name": "ResNet50"}, num_classes=2)
    with pytest.raises(ValueError, match=r"'ACTIVATIONS' is not in pppml_jax\.models"):
        build_model({"name": "ACTIVATIONS"}, num_classes=2)
    with pytest.raises(ValueError, match="model UNet2D: bad options"):
        build_model({"name": "UNet2D", "options": {"width": 3}}, num_classes=2)


# Every probe of issue 11 ("Config sections go unchecked"): refused at load, naming the key.
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("checkpoint.evry=1", r"unknown key 'checkpoint\.evry'; accepted keys here: every, keep"),
        ("report.exampel_images=1", r"unknown key 'report\.exampel_images'.*example_images"),
        ("evaluation.empty_mask=one", r"unknown key 'evaluation\.empty_mask'.*empty_masks"),
        ("checkpoint.every=abc", r"checkpoint\.every='abc' must be an integer"),
        ("checkpoint.every=-1", r"checkpoint\.every=-1 must be >= 0"),
        ("checkpoint.keep=1", r"checkpoint\.keep=1 must be >= 2"),
        ("report.example_images=abc", r"report\.example_images='abc' must be an integer"),
        ("training.rounds=true", r"training\.rounds=True must be an integer"),
        ("training.lr=yes", r"training\.lr=True must be a number"),
        ("seed=false", r"seed=False must be an integer"),
        ("overrides.pppml.secure.backend=rsa", r"secure\.backend='rsa'.*plain, bfv, ckks"),
        ("overrides.pppml.secure.clipp=1", r"unknown secure option.*clipp'.*\bclip\b"),
        ("overrides.pppml.secure.clip=abc", r"secure\.clip='abc'"),
        ("overrides.pppml.secure.on_dropout=x", r"secure\.on_dropout='x'"),
        ("overrides.pppml.secure.seed=3", r"secure\.seed'.*sets it every round"),
        ("training.secure=[bfv]", r"training\.secure=\['bfv'\] must be null or a mapping"),
        ("overrides.pppml.lr=0", r"overrides\.pppml\.lr=0(\.0)? must be"),
        ("model.options.width=3", r"unknown key 'model\.options\.width'; UNet2D accepts"),
        ("model.name=ResNet", r"model\.name='ResNet'.*UNet2D"),
        ("data.name=mnist", r"data\.name='mnist'.*synthetic_chest_ct"),
        ("data.colour=1", r"unknown key 'data\.colour'; accepted keys here: name, options"),
        ("training.seed=1", r"training\.seed'.*top-level 'seed'"),
        ("algorithms=[fedavg, fedavg]", r"algorithms\[1\]: label 'fedavg' is used twice"),
        ("algorithms=[fedavg, {label: x}]", r"algorithms\[1\]=.*algorithm name or a mapping"),
        ("algorithms=[{name: fedavg, label: a/b}]", r"algorithms\[0\]\.label='a/b'"),
    ],
)
def test_every_section_is_checked_at_load(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    path.write_text(
        "data: {name: synthetic_chest_ct}\nmodel: {name: UNet2D}\n"
        "algorithms: [fedavg, pppml]\noverrides: {pppml: {secure: {backend: bfv}}}\n"
    )
    with pytest.raises(ConfigError, match=message):
        load_config(path, [override])


def test_typed_sections_and_round_trip():
    config = validate({**BASE, "checkpoint": {"every": 0}, "report": {"example_images": 0}})
    assert config.checkpoint.every == 0 and config.checkpoint.keep == 3
    assert config.report.example_images == 0 and config.evaluation.empty_masks == "one"
    assert validate(config.to_dict()) == config
    secure = validate({**BASE, "training": {"secure": {"backend": "ckks", "clip": 2}}})
    assert secure.federation_config("fedavg").secure == {"backend": "ckks", "clip": 2.0}


def test_algorithm_labels_key_the_results_and_overrides():
    config = validate(
        {**BASE, "algorithms": ["fedavg", {"name": "fedavg", "label": "fedavg-b"}],
         "overrides": {"fedavg-b": {"lr": 0.3}}}
    )  # fmt: skip
    assert config.labels == ("fedavg", "fedavg-b")
    assert config.federation_config("fedavg-b").lr == 0.3
    assert config.federation_config("fedavg").lr == 0.1
    assert config.to_dict()["algorithms"] == ["fedavg", {"name": "fedavg", "label": "fedavg-b"}]


def test_algorithm_options_go_through_the_registry():
    config = validate(
        {**BASE, "algorithms": ["fedavg", {"name": "perfedavg", "variant": "hf", "label": "pf-hf"}],
         "overrides": {}}
    )  # fmt: skip
    assert config.labels == ("fedavg", "pf-hf")
    assert config.algorithm("pf-hf").options == {"variant": "hf"}
    assert config.federation_config("pf-hf").algorithm.name == "perfedavg"
    with pytest.raises(ConfigError, match=r"algorithms\[1\] \(fedavg\):.*beta"):
        validate({**BASE, "algorithms": ["local", {"name": "fedavg", "beta": 0.1}]})


def test_shared_per_fedavg_options_are_not_passed_to_algorithms_without_them():
    import warnings

    from pppml_jax.federation import Federation, IgnoredOptionWarning

    config = validate({**BASE, "training": {"rounds": 3, "lr": 0.1, "beta": 0.02, "variant": "hf"}})
    fed = federation_config(config, "fedavg")
    assert (fed.beta, fed.variant) == (None, "fo")
    assert (
        federation_config(config, "perfedavg").beta,
        federation_config(config, "perfedavg").variant,
    ) == (0.01, "hf")
    clients = [{"x": np.zeros((4, 2), np.float32)}] * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredOptionWarning)
        Federation(lambda p, b: (p * b["x"]).sum(), clients, fed)
