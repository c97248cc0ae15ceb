"""TensorBoard event files (read back record by record), MLflow when installed, and
``History.to_json`` / ``from_json``."""

import struct

import jax.numpy as jnp
import numpy as np
import pytest

from pppml_jax.experiments.config_run import TrackingConfig
from pppml_jax.experiments.tracking import Tracker, scalars

RECORDS = [
    {"round": 1, "seconds": 2.5, "train_loss": 0.9, "clients": [0, 1]},
    {
        "round": 2,
        "seconds": 1.5,
        "train_loss": 0.7,
        "clients": [0, 1],
        "mean_global": 0.4,
        "mean_personalized": 0.5,
        "per_client_global": [0.3, float("nan")],
        "per_client_personalized": [0.4, 0.6],
        "eval_seconds": 0.2,
        "secure": {"backend": "bfv", "bytes": 1234},
    },
]


def read_scalars(path):
    """``{(tag, step): value}`` of a TensorBoard event file (TFRecord framing, Event protos)."""
    from tensorboardX.proto import event_pb2

    out, data = {}, path.read_bytes()
    offset = 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
        offset += 12 + length + 4
        for value in event.summary.value:
            if value.HasField("simple_value"):
                out[(value.tag, event.step)] = value.simple_value
    return out


def test_scalars_names_every_finite_number():
    values = scalars(RECORDS[1])
    assert values["train/loss"] == 0.7 and values["secure/bytes"] == 1234
    assert values["eval_client/1/personalized"] == 0.6
    assert "eval_client/1/global" not in values  # NaN: nothing to plot


def test_tensorboard_event_files_hold_every_round(tmp_path):
    tracker = Tracker(tmp_path, TrackingConfig(), "tiny")
    tracker.start("fedavg", 3, {"lr": 0.01, "secure": None, "local_optimizer": "adam"})
    for record in RECORDS:
        tracker.round(record)
    tracker.finish("ok", {"mean_global": 0.4, "mean_personalized": 0.5})
    files = list((tmp_path / "tensorboard" / "fedavg" / "seed-3").glob("events.out.tfevents.*"))
    assert len(files) == 1
    logged = read_scalars(files[0])
    assert logged[("train/loss", 1)] == pytest.approx(0.9)
    assert logged[("eval/mean_personalized", 2)] == pytest.approx(0.5)
    assert logged[("time/round_seconds", 2)] == pytest.approx(1.5)
    assert logged[("secure/bytes", 2)] == pytest.approx(1234)
    hparams = list((tmp_path / "tensorboard" / "fedavg" / "seed-3").rglob("*hparams*"))
    assert hparams  # the HPARAMS tab's run


def test_no_tensorboard_writes_nothing(tmp_path):
    tracker = Tracker(tmp_path, TrackingConfig(tensorboard=False), "tiny")
    tracker.start("fedavg", 0, {})
    tracker.round(RECORDS[0])
    tracker.finish("diverged", None)
    assert not (tmp_path / "tensorboard").exists()


def test_mlflow_local_file_store(tmp_path):
    pytest.importorskip("mlflow")
    tracker = Tracker(tmp_path, TrackingConfig(tensorboard=False, mlflow=True), "tiny")
    tracker.start("fedavg", 0, {"lr": 0.01})
    for record in RECORDS:
        tracker.round(record)
    tracker.finish("ok", {"mean_global": 0.4})
    assert any((tmp_path / "mlruns").rglob("train.loss"))


def test_mlflow_missing_is_a_config_error(tmp_path, monkeypatch):
    import builtins

    from pppml_jax.experiments.config import ConfigError

    real = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow":
            raise ImportError("No module named 'mlflow'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(ConfigError, match=r"pppml-jax\[mlflow\]"):
        Tracker(tmp_path, TrackingConfig(mlflow=True), "tiny")


def test_history_round_trips_through_json(tmp_path):
    from pppml_jax.federation.run import History, RoundRecord, run

    def loss(params, batch):
        return jnp.mean((batch["x"] @ params["w"] + params["b"] - batch["y"]) ** 2)

    rng = np.random.default_rng(0)
    clients = [
        {
            "x": rng.normal(size=(8, 3)).astype(np.float32),
            "y": rng.normal(size=8).astype(np.float32),
        }
        for _ in range(2)
    ]
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    hist = run(loss, params, clients, algorithm="fedavg", rounds=2, local_steps=1, batch_size=4)
    path = hist.to_json(tmp_path / "hist.json")
    assert (tmp_path / "hist.npz").is_file()
    back = History.from_json(path)
    assert all(isinstance(r, RoundRecord) for r in back.rounds)
    assert [r.to_dict() for r in back.rounds] == [r.to_dict() for r in hist.rounds]
    np.testing.assert_array_equal(back.params["w"], np.asarray(hist.params["w"]))
    assert back.config == hist.config and back.state is None
    like = History.from_json(path, like=params)
    assert set(like.params) == {"w", "b"} and like.params["b"].shape == ()
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not a History"):
        History.from_json(tmp_path / "other.json")
