"""Config files: --set overrides, validation messages, per-algorithm FederationConfig."""

import flax.linen as nn
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
        ({"epochs": 3}, "unknown top-level key"),
        ({"training": {"rounds": 3, "learning_rate": 0.1}}, "learning_rate"),
        ({"algorithms": ["fedprox"]}, "fedprox"),
        ({"overrides": {"fedprox": {}}}, "fedprox"),
        ({"model": {"options": {}}}, "model must be a mapping with a 'name'"),
        ({"seed": "zero"}, "seed='zero'"),
        ({"evaluation": {"empty_masks": "zero"}}, "empty_masks='zero' must be 'one' or 'exclude'"),
    ],
)
def test_validation_names_the_problem(change, message):
    with pytest.raises(ConfigError, match=message):
        validate({**BASE, **change})


def test_bad_values_surface_with_the_algorithm(tmp_path):
    config = validate({**BASE, "training": {"rounds": 0}})
    with pytest.raises(ConfigError, match="algorithm fedavg: rounds=0"):
        federation_config(config, "fedavg")


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
        for algorithm in config["algorithms"]:
            federation_config(config, algorithm)
        model = build_model(config["model"], num_classes=2)
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
