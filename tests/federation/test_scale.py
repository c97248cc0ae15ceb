"""Chunks, host placement, sharding over 8 forced CPU devices and over two processes.

Each must give the single-device, single-chunk result: the same clients, keys and batches, only
the float summation order of the weighted mean may differ.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import logistic_accuracy, logistic_loss, make_clients, max_abs_diff

from pppml_jax.federation import Federation, FederationConfig

SCRIPT = Path(__file__).parent / "scripts" / "multiprocess_round.py"
TOL = 1e-6


def two_rounds(algorithm, **options):
    train = make_clients([12, 30, 21, 45, 9, 17, 33], seed=1)
    test = make_clients([5] * 7, seed=2)
    config = FederationConfig(algorithm=algorithm, local_steps=2, batch_size=8, lr=0.2, **options)
    fed = Federation(logistic_loss, train, config, eval_fn=logistic_accuracy, test_clients=test)
    state = fed.init({"w": jnp.zeros(5), "b": jnp.zeros(())})
    for _ in range(2):
        state, info = fed.round(state)
    return jax.device_get(state), fed.evaluate(state), info


@pytest.mark.parametrize("algorithm", ["fedavg", "local"])
@pytest.mark.parametrize(
    "options",
    [
        {"execution": "vmap", "chunk_size": 3},
        {"execution": "vmap", "chunk_size": 2, "data_placement": "host"},
        {"execution": "loop", "data_placement": "host"},
    ],
)
def test_chunks_and_host_placement_change_nothing(algorithm, options):
    ref_state, ref_eval, ref_info = two_rounds(algorithm, execution="vmap")
    state, ev, info = two_rounds(algorithm, **options)
    assert max_abs_diff(ref_state, state) < TOL
    np.testing.assert_allclose(ev.personalized, ref_eval.personalized, atol=TOL)
    assert info.train_loss == pytest.approx(ref_info.train_loss, abs=TOL)


def run_script(out: Path, *args: str, env_extra=None) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env.update(env_extra or {})
    subprocess.run([sys.executable, str(SCRIPT), str(out), *args], check=True, env=env, timeout=600)
    return json.loads(out.read_text())


def assert_same(a: dict, b: dict) -> None:
    for algorithm in ("fedavg", "local"):
        for leaf, value in a[algorithm]["params"].items():
            diff = np.abs(np.asarray(value) - np.asarray(b[algorithm]["params"][leaf])).max()
            assert diff < TOL, (algorithm, leaf, diff)
        np.testing.assert_allclose(
            np.asarray(a[algorithm]["personalized"], float),
            np.asarray(b[algorithm]["personalized"], float),
            atol=TOL,
        )
        assert a[algorithm]["loss"] == pytest.approx(b[algorithm]["loss"], abs=TOL)


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    return run_script(tmp_path_factory.mktemp("one") / "out.json", "--devices-per-process", "1")


def test_sharded_over_eight_cpu_devices_equals_one_device(single_device, tmp_path):
    eight = run_script(tmp_path / "out.json", "--devices-per-process", "8", "--chunk-size", "8")
    assert eight["devices"] == 8 and single_device["devices"] == 1
    assert_same(single_device, eight)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process(single_device, tmp_path):
    port = free_port()
    out = tmp_path / "out.json"
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    common = [
        sys.executable,
        str(SCRIPT),
        str(out),
        "--devices-per-process",
        "2",
        "--num-processes",
        "2",
        "--coordinator",
        f"127.0.0.1:{port}",
        "--data-placement",
        "host",
        "--chunk-size",
        "4",
    ]
    procs = [
        subprocess.Popen([*common, "--process-id", str(i)], env=env, stderr=subprocess.PIPE)
        for i in range(2)
    ]
    errors = [p.communicate(timeout=600)[1].decode()[-2000:] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    multi = json.loads(out.read_text())
    assert multi["processes"] == 2 and multi["devices"] == 4
    assert_same(single_device, multi)
