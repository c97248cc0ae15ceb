"""Per-client state at scale: 10,000 clients, 100 sampled, state on the host, exact resume."""

import jax
import numpy as np
import pytest
from conftest import logistic_loss, max_abs_diff

import pppml_jax as pj
from pppml_jax.federation import Checkpointer, Federation, FederationConfig

K, SAMPLED = 10_000, 100


@pytest.fixture(scope="module")
def many_clients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(K, 4, 5)).astype(np.float32)
    y = (rng.random((K, 4)) > 0.5).astype(np.float32)
    block = pj.federation.ClientBlock({"x": x, "y": y}, np.full(K, 4, np.int32))
    params = {"w": np.zeros(5, np.float32), "b": np.zeros((), np.float32)}
    return block, params


@pytest.mark.parametrize("algorithm", [{"name": "ditto", "lam": 0.1}, "scaffold"])
def test_sampled_rows_change_and_a_restored_run_continues_exactly(
    many_clients, algorithm, tmp_path
):
    block, params = many_clients
    config = FederationConfig(
        algorithm=pj.algorithms.make_algorithm(algorithm),
        local_steps=2,
        batch_size=4,
        lr=0.1,
        clients_per_round=SAMPLED,
        execution="loop",
    )
    fed = Federation(logistic_loss, block, config)
    state = fed.init(params)
    leaves = jax.tree.leaves(state.client_state)
    assert leaves and all(isinstance(x, np.ndarray) and x.shape[0] == K for x in leaves)
    first, info = fed.round(state)
    changed = np.zeros(K, bool)
    for old, new in zip(leaves, jax.tree.leaves(first.client_state), strict=True):
        changed |= (old != new).reshape(K, -1).any(axis=1)
    assert set(np.flatnonzero(changed)) <= set(info.clients)  # only sampled clients move
    assert changed.sum() > 0

    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(first)
    uninterrupted, _ = fed.round(first)
    fresh = Federation(logistic_loss, block, config)
    restored, _ = ckpt.restore_latest(fresh.init(params))
    assert max_abs_diff(restored, first) == 0.0
    resumed, _ = fresh.round(restored)
    assert max_abs_diff(resumed, uninterrupted) == 0.0
