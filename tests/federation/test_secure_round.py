"""PPPML-HMI in the engine: Per-FedAvg whose aggregation goes around the secure ring."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import logistic_loss, make_clients, max_abs_diff

from pppml_jax import secure
from pppml_jax.algorithms.client_update import make_client_update, perfedavg_rule
from pppml_jax.federation import Federation, FederationConfig, RoundError
from pppml_jax.federation.schedule import TRAIN_STREAM

TRAIN = make_clients([12, 30, 21, 45], seed=1)
PARAMS = {"w": jnp.zeros(5, jnp.float32), "b": jnp.zeros((), jnp.float32)}
COMMON = {"local_steps": 2, "batch_size": 8, "lr": 0.2, "alpha": 0.05, "beta": 0.2}


@pytest.mark.parametrize("backend", ["plain", "bfv"])
@pytest.mark.parametrize("execution", ["loop", "vmap"])
def test_pppml_round_equals_perfedavg_round_within_the_quantisation_bound(backend, execution):
    plain = Federation(
        logistic_loss, TRAIN, FederationConfig(algorithm="perfedavg", execution=execution, **COMMON)
    )
    ring = Federation(
        logistic_loss,
        TRAIN,
        FederationConfig(
            algorithm="pppml", execution=execution, secure={"backend": backend}, **COMMON
        ),
    )
    state = ring.init(PARAMS)
    for _ in range(3):  # along pppml's own trajectory, one round of each from the same state
        expected, _ = plain.round(state)
        state, info = ring.round(state)
        bound = info.secure["error_bound"]
        assert 0 < bound < 1e-3
        # the server step adds the mean update to theta: its error, plus float32 rounding
        assert max_abs_diff(jax.device_get(state.params), jax.device_get(expected.params)) <= (
            bound + 1e-6
        )
        assert info.secure["participants"] == [0, 1, 2, 3]
        assert info.secure["initiator"] == (state.round - 1) % 4  # round-robin
        assert info.secure["bytes"] > 0 and info.secure["messages"] >= 4


def test_a_failed_ring_leaves_the_state_unchanged():
    config = FederationConfig(
        algorithm="pppml",
        secure={"backend": "plain", "on_dropout": "abort", "faults": [secure.Dropout(2, hop=1)]},
        **COMMON,
    )
    fed = Federation(logistic_loss, TRAIN, config)
    state = fed.init(PARAMS)
    before = jax.device_get(state)
    with pytest.raises(RoundError, match="secure aggregation failed"):
        fed.round(state)
    assert state.round == 0 and max_abs_diff(jax.device_get(state), before) == 0.0


def test_a_reformed_ring_averages_the_remaining_clients():
    dropped = 1
    config = FederationConfig(
        algorithm="pppml",
        secure={"backend": "plain", "faults": [secure.Dropout(dropped, hop=0)]},
        **COMMON,
    )
    fed = Federation(logistic_loss, TRAIN, config)
    state, info = fed.round(fed.init(PARAMS))
    assert info.secure["participants"] == [0, 2, 3] and info.secure["dropped"] == [dropped]
    # recompute every client's local training independently, with the engine's key rule
    update = make_client_update(
        lambda p, s, b: (logistic_loss(p, b), s),
        perfedavg_rule(alpha=COMMON["alpha"]),
        optax.sgd(COMMON["beta"]),
        local_steps=COMMON["local_steps"],
        batch_size=COMMON["batch_size"],
    )
    stream = jax.random.fold_in(fed.schedule.round_key(0), TRAIN_STREAM)
    deltas, weights = [], []
    for k in (0, 2, 3):
        data = {name: jnp.asarray(v) for name, v in TRAIN[k].items()}
        n = len(TRAIN[k]["y"])
        result = update(PARAMS, None, data, n, jax.random.fold_in(stream, k))
        deltas.append(jax.tree.map(jnp.subtract, result.params, PARAMS))
        weights.append(n)
    w = np.asarray(weights, np.float64) / np.sum(weights)
    expected = jax.tree.map(
        lambda p, *ds: p + sum(wi * np.asarray(d) for wi, d in zip(w, ds, strict=True)),
        PARAMS,
        *deltas,
    )
    assert max_abs_diff(jax.device_get(state.params), expected) <= info.secure["error_bound"] + 1e-6


def test_clipping_in_pj_federation_run_is_counted_warned_and_inside_the_error_bound():
    import pppml_jax as pj

    kw = {"rounds": 1, "seed": 3, **COMMON}
    reference = pj.federation.run(logistic_loss, PARAMS, TRAIN, algorithm="perfedavg", **kw)
    with pytest.warns(secure.ClippingWarning, match=r"beyond clip=0.001 were clipped"):
        history = pj.federation.run(
            logistic_loss,
            PARAMS,
            TRAIN,
            algorithm="pppml",
            secure={"backend": "plain", "clip": 1e-3},
            **kw,
        )
    (record,) = history.rounds
    stats = record.secure
    assert stats["clipped"] > 0 and stats["clip_excess"] > 0
    assert stats["clipping_bound"] > 0
    assert stats["error_bound"] >= stats["clipping_bound"]
    err = max_abs_diff(jax.device_get(history.params), jax.device_get(reference.params))
    # clipping moved the model well beyond the quantisation error, and the record says so
    assert stats["error_bound"] - stats["clipping_bound"] < 1e-6 < err
    assert err <= stats["error_bound"] + 1e-6
