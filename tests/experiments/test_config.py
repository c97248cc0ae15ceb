"""Config files: --set overrides, validation messages, per-algorithm FederationConfig."""

from pathlib import Path

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
    root = Path(__file__).parents[2] / "configs"
    configs = sorted(root.glob("*.yaml")) + sorted((root / "benchmark").glob("*.yaml"))
    assert configs, "no configs/*.yaml found"
    assert any(p.parent.name == "benchmark" for p in configs), "no configs/benchmark/*.yaml"
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


# Issue 11 audit: option values of the model, the data set and the secure backend are checked
# at load (before fingerprint.json is written or any algorithm trains), naming the dotted key.
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.options.levels=true"], r"model\.options\.levels=True must be an integer"),
        (["model.options.features=abc"], r"model\.options\.features='abc' must be an integer"),
        (
            ["model.options.norm=nope"],
            r"model\.options\.norm='nope' is not accepted; use one of 'batch', 'group', 'none'",
        ),
        (["model.options.levels=-1"], r"model\.options\.levels=-1 must be >= 0"),
        (["model.options.bn_momentum=2"], r"model\.options\.bn_momentum=2(\.0)? must be <= 1"),
        (
            ["model.name=LeNet", "model.options={activation: swish}"],
            r"model\.options\.activation='swish' is not accepted; use one of 'sigmoid'",
        ),
        (
            ["model.name=LeNet", "model.options={strides: [1, 2]}"],
            r"model\.options\.strides=\[1, 2\] has 2 entries but features=\[12, 12, 12\]",
        ),
        (
            ["model.name=DenseNet3DTiny", "model.options={block_config: [1, true]}"],
            r"model\.options\.block_config\[1\]=True must be an integer",
        ),
        (
            ["data.options.colour=1"],
            r"unknown key 'data\.options\.colour'; data set 'synthetic_chest_ct' accepts .*"
            r"image_size",
        ),
        (["data.options.image_size=abc"], r"data\.options\.image_size='abc' must be an integer"),
        (["data.options.image_size=true"], r"data\.options\.image_size=True must be an integer"),
        (["data.options.image_size=20"], r"data\.options\.image_size=20 must be a multiple of 8"),
        (
            ["data.options.profiles=nope"],
            r"data\.options\.profiles='nope' is not a preset; use one of .*quickstart",
        ),
        (
            ["data.options.profiles=[{num_patients: 0}]"],
            r"data\.options\.profiles\[0\]\.num_patients=0 must be >= 1",
        ),
        (
            ["data.options.profiles=[{num_patient: 3}]"],
            r"unknown key 'data\.options\.profiles\[0\]\.num_patient'.*num_patients",
        ),
        (
            ["data.options.task=detect"],
            r"data\.options\.task='detect' is not accepted; use one of 'segmentation'",
        ),
        (["data.options.split=random"], r"data\.options\.split='random' is not accepted"),
        (["data.options.num_folds=1"], r"data\.options\.num_folds=1 must be >= 2"),
        (["data.options.slab_gap=1"], r"data\.options\.slab_gap=1 must be a boolean"),
        (
            ["data.name=real_ct", "data.options={task: classification, label: x}"],
            r"data\.options\.label='x' is not accepted; use one of 'cranial', 'tumour'",
        ),
        (
            ["data.name=real_ct", "data.options={label: tumour}"],
            r"data\.options\.label needs data\.options\.task=classification",
        ),
        (
            ["data.name=covid_ct_seg", "data.options={size: 64}"],
            r"data\.options\.manual_dir is required",
        ),
        (
            ["data.name=covid_ct_seg", "data.options={manual_dir: /nowhere, axis: w}"],
            r"data\.options\.axis='w' is not accepted; use one of 'x', 'y', 'z'",
        ),
        (
            ["data.name=rad_chestct", "data.options={manual_dir: /nowhere, crop: 1}"],
            r"data\.options\.crop=1 must be a boolean",
        ),
        (
            ["overrides.pppml.secure.preset=nope"],
            r"overrides\.pppml\.secure\.preset='nope': bfv presets are \['compact', 'wide'\]",
        ),
        (
            ["overrides.pppml.secure.bits=99"],
            r"overrides\.pppml\.secure\.bits=99: bfv plaintext modulus needs 16 to 40 bits",
        ),
        (
            ["overrides.pppml.secure={backend: ckks, mask_bits: 20}"],
            r"overrides\.pppml\.secure\.mask_bits=20: ckks needs bits\+8 to 46",
        ),
        (
            ["overrides.pppml.secure={backend: plain, bits: 4}"],
            r"overrides\.pppml\.secure\.bits=4: plain needs an integer in \[8, 62\]",
        ),
        (  # TenSEAL raises a RuntimeError: no 16-bit batching prime for N = 8192
            ["overrides.pppml.secure={backend: bfv, poly_modulus_degree: 8192, bits: 16}"],
            r"overrides\.pppml\.secure: backend 'bfv' refuses bits=16, poly_modulus_degree=8192",
        ),
        (
            ["overrides.pppml.secure.rotate_every=0"],
            r"overrides\.pppml\.secure\.rotate_every=0 must be null or >= 1",
        ),
    ],
)
def test_option_values_are_checked_at_load(tmp_path, monkeypatch, overrides, message):
    import pppml_jax.data.loading as loading

    def no_data(*args, **kwargs):
        raise AssertionError("config validation read data")

    monkeypatch.setattr(loading, "load_federation", no_data)
    for name in loading.LOADERS:
        monkeypatch.setitem(loading.LOADERS, name, no_data)
    path = tmp_path / "c.yaml"
    path.write_text(
        "data: {name: synthetic_chest_ct}\nmodel: {name: UNet2D}\n"
        "algorithms: [fedavg, pppml]\noverrides: {pppml: {secure: {backend: bfv}}}\n"
    )
    with pytest.raises(ConfigError, match=message):
        load_config(path, overrides)


def test_good_option_values_load():
    config = load_config(
        Path(__file__).parents[2] / "configs" / "quickstart.yaml",
        [
            "model.options={features: 4, levels: 2, norm: batch, bn_momentum: 0.99}",
            "data.options.image_size=32",
            "data.options.data_dir=null",  # the loader's default directory
            "data.options.val_fraction=0.25",
            "data.options.profiles=[{num_patients: 3}, {num_patients: 4, matrix: 16}]",
            "overrides.pppml.secure={backend: bfv, preset: wide, max_parties: 16}",
        ],
    )
    assert config.model.options["levels"] == 2 and config.data.options["image_size"] == 32
    assert config.federation_fields("pppml")["secure"]["preset"] == "wide"
    lenet = validate(
        {
            **BASE,
            "model": {
                "name": "LeNet",
                "options": {"features": [4, 4], "strides": [1, 2], "init_range": None},
            },
        }
    )
    assert tuple(build_model(lenet.model, num_classes=2).strides) == (1, 2)
    real = validate(
        {
            **BASE,
            "data": {
                "name": "real_ct",
                "options": {"task": "classification", "label": "tumour", "profiles": "identical"},
            },
        }
    )
    assert real.data.options["label"] == "tumour"
