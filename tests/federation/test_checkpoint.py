"""Checkpoints: a resumed federation equals the uninterrupted one; corrupt steps fall back."""

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
import pytest
from conftest import bn_functions, logistic_loss, make_clients, max_abs_diff

from pppml_jax.federation import Federation, FederationConfig
from pppml_jax.federation.checkpoint import Checkpointer, CheckpointWarning


def logistic_federation(algorithm="fedavg"):
    config = FederationConfig(
        algorithm=algorithm,
        local_steps=2,
        batch_size=8,
        clients_per_round=2,
        local_optimizer="adam",
        server_optimizer=optax.adam(0.1),
    )
    fed = Federation(logistic_loss, make_clients([12, 30, 21], seed=1), config)
    return fed, fed.init({"w": jnp.zeros(5), "b": jnp.zeros(())})


@pytest.mark.parametrize("algorithm", ["fedavg", "local"])
def test_six_rounds_equal_three_a_restart_and_three(tmp_path, algorithm):
    fed, state = logistic_federation(algorithm)
    whole = state
    for _ in range(6):
        whole, _ = fed.round(whole)

    checkpointer = Checkpointer(tmp_path)
    part = state
    for _ in range(3):
        part, _ = fed.round(part)
        checkpointer.save(part, {"note": "three"})
    del part, checkpointer, fed  # the "crash": nothing survives but the directory

    fed, template = logistic_federation(algorithm)
    restored, record = Checkpointer(tmp_path).restore_latest(template)
    assert restored.round == 3 and record["note"] == "three" and record["secure_round"] == 3
    for _ in range(3):
        restored, _ = fed.round(restored)
    assert max_abs_diff(jax.device_get(whole), jax.device_get(restored)) == 0.0


def test_model_state_and_server_optimizer_survive(tmp_path):
    loss, _, params, mstate = bn_functions()
    config = FederationConfig(local_steps=1, batch_size=4, server_optimizer=optax.adam(0.1))
    fed = Federation(loss, make_clients([8, 9], seed=0), config, stateful=True)
    state, _ = fed.round(fed.init(params, mstate))
    Checkpointer(tmp_path).save(state)
    restored, _ = Checkpointer(tmp_path).restore_latest(fed.init(params, mstate))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    assert max_abs_diff(jax.device_get(restored), jax.device_get(state)) == 0.0


def _one_data_file(step_dir: Path) -> Path:
    files = [p for p in step_dir.rglob("*") if p.is_file() and "/d/" in str(p)]
    return max(files, key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_manifest"])
def test_corrupt_latest_step_falls_back_with_a_warning(tmp_path, damage):
    fed, state = logistic_federation()
    checkpointer = Checkpointer(tmp_path)
    states = []
    for _ in range(3):
        state, _ = fed.round(state)
        checkpointer.save(state)
        states.append(state)
    step_dir = tmp_path / "3"
    if damage == "truncate":
        target = _one_data_file(step_dir)
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "flip":
        target = _one_data_file(step_dir)
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    else:
        (step_dir / "manifest.json").unlink()
    with pytest.warns(CheckpointWarning, match="step 3"):
        restored, _ = checkpointer.restore_latest(fed.init({"w": jnp.zeros(5), "b": jnp.zeros(())}))
    assert restored.round == 2
    assert max_abs_diff(jax.device_get(restored), jax.device_get(states[1])) == 0.0


def test_a_redone_round_replaces_the_unusable_step(tmp_path):
    fed, state = logistic_federation()
    checkpointer = Checkpointer(tmp_path)
    for _ in range(3):
        state, _ = fed.round(state)
        checkpointer.save(state)
    (tmp_path / "3" / "manifest.json").unlink()  # killed while saving step 3
    template = fed.init({"w": jnp.zeros(5), "b": jnp.zeros(())})
    with pytest.warns(CheckpointWarning):
        resumed, _ = checkpointer.restore_latest(template)
    redone, _ = fed.round(resumed)
    checkpointer.save(redone, {"note": "redone"})
    restored, record = Checkpointer(tmp_path).restore_latest(template)
    assert restored.round == 3 and record["note"] == "redone"
    assert max_abs_diff(jax.device_get(restored), jax.device_get(state)) == 0.0


def test_no_checkpoint_gives_none(tmp_path):
    _, state = logistic_federation()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Checkpointer(tmp_path / "empty").restore_latest(state) is None
