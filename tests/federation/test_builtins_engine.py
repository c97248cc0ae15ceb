"""The new built-ins in the engine: vmap equals loop, the secure ring, and checkpoint resume.

Each of scaffold, fedbn, fedper, fedrep, ditto, apfl and fedprox runs on a tiny federation
(logistic regression; FedBN on the BatchNorm MLP) with 3 of 4 clients sampled per round, so
client state rows of unsampled clients must stay put.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import bn_functions, logistic_loss, make_clients

import pppml_jax as pj
from pppml_jax.federation import Checkpointer, Federation, FederationConfig

TRAIN = make_clients([12, 30, 21, 45], seed=1)
PARAMS = {"w": jnp.zeros(5, jnp.float32), "b": jnp.zeros((), jnp.float32)}
COMMON = {"local_steps": 2, "batch_size": 8, "lr": 0.2, "clients_per_round": 3}

ALGORITHMS = {
    "scaffold": lambda: pj.algorithms.scaffold(),
    "fedbn": lambda: pj.algorithms.fedbn(),
    "fedper": lambda: pj.algorithms.fedper(head="w"),
    "fedrep": lambda: pj.algorithms.fedrep(head="w", head_steps=1),
    "ditto": lambda: pj.algorithms.ditto(lam=0.5),
    "apfl": lambda: pj.algorithms.apfl(mix=0.3),
    "fedprox": lambda: pj.algorithms.fedprox(mu=0.1),
}


def federation(name, **options):
    config = FederationConfig(algorithm=ALGORITHMS[name](), **COMMON, **options)
    if name == "fedbn":
        loss, _, params, mstate = bn_functions()
        fed = Federation(loss, TRAIN, config, stateful=True)
        return fed, fed.init(params, mstate)
    fed = Federation(logistic_loss, TRAIN, config)
    return fed, fed.init(PARAMS)


def max_abs_diff(a, b) -> float:
    """The largest leaf difference of two pytrees of the same structure (0 for no leaves)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(
        (float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in pairs), default=0.0
    )


def rounds(fed, state, n):
    for _ in range(n):
        state, _ = fed.round(state)
    return state


def arrays(state):
    """The state's arrays (round, server and client state, model state) on the host."""
    return jax.device_get(state._replace(round=np.int64(state.round)))


@pytest.mark.parametrize("name", ALGORITHMS)
def test_vmap_and_loop_give_the_same_state(name):
    loop = rounds(*federation(name, execution="loop"), 2)
    vmap = rounds(*federation(name, execution="vmap"), 2)
    assert jax.tree.structure(loop) == jax.tree.structure(vmap)
    assert max_abs_diff(arrays(loop), arrays(vmap)) < 1e-5


@pytest.mark.parametrize("name", ALGORITHMS)
def test_secure_plain_ring_equals_the_insecure_round_within_its_bound(name):
    plain, state = federation(name, execution="loop")
    ring, _ = federation(name, execution="loop", secure={"backend": "plain"})
    for _ in range(2):  # along the ring's trajectory, one round of each from the same state
        expected, _ = plain.round(state)
        state, info = ring.round(state)
        bound = info.secure["error_bound"]
        assert 0 < bound < 1e-3 and info.secure["bytes"] > 0
        assert max_abs_diff(state.params, expected.params) <= bound + 1e-6
        assert max_abs_diff(state.server_state, expected.server_state) <= bound + 1e-6
        # what a client keeps never goes around the ring: its rows match up to the next
        # round's use of the (bound-close) broadcast, and this round they are identical
        assert max_abs_diff(state.client_state, expected.client_state) == 0.0


@pytest.mark.parametrize("name", ALGORITHMS)
def test_resume_from_a_checkpoint_gives_the_uninterrupted_result(tmp_path, name):
    fed, start = federation(name, execution="loop")
    whole = rounds(fed, start, 3)

    part = rounds(fed, start, 2)
    Checkpointer(tmp_path).save(part)
    del part

    fed, template = federation(name, execution="loop")
    restored, record = Checkpointer(tmp_path).restore_latest(template)
    assert restored.round == 2 and record["round"] == 2
    restored = rounds(fed, restored, 1)
    assert jax.tree.structure(restored) == jax.tree.structure(whole)
    assert max_abs_diff(arrays(restored), arrays(whole)) == 0.0
