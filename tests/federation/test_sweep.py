"""run_many: R runs (seeds x grid) equal R separate run() calls, in both strategies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import bn_functions, logistic_accuracy, logistic_loss, make_clients

import pppml_jax as pj
from pppml_jax.federation.sweep import points


def _close(a, b, atol=2e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-4)


def _same(hist, ref, atol=2e-5):
    _close(hist.params, ref.params, atol)
    _close(hist.state.server_state, ref.state.server_state, atol)
    _close(hist.state.client_state, ref.state.client_state, atol)
    assert [r.clients for r in hist.rounds] == [r.clients for r in ref.rounds]
    np.testing.assert_allclose(
        [r.train_loss for r in hist.rounds], [r.train_loss for r in ref.rounds], rtol=1e-4
    )
    for r, q in zip(hist.rounds, ref.rounds, strict=True):
        assert (r.mean_global is None) == (q.mean_global is None)
        if r.mean_global is not None:
            np.testing.assert_allclose(r.per_client_global, q.per_client_global, atol=1e-5)
            np.testing.assert_allclose(
                r.per_client_personalized, q.per_client_personalized, atol=1e-5
            )


@pytest.fixture
def data():
    train = make_clients([12, 30, 21, 45, 9, 17], seed=1)
    test = make_clients([8, 10, 0, 16, 4, 6], seed=2)
    params = {"w": jnp.zeros(5, jnp.float32), "b": jnp.zeros((), jnp.float32)}
    return train, test, params


def test_points_are_seed_major():
    runs = points([3, 4], {"lr": [0.1, 0.2], "mu": [0.0]})
    assert [(p.seed, p.values["lr"]) for p in runs] == [(3, 0.1), (3, 0.2), (4, 0.1), (4, 0.2)]


@pytest.mark.parametrize(
    "algorithm, grid",
    [
        ("fedavg", {"lr": [0.02, 0.1]}),
        (pj.algorithms.ditto(lam=0.1), {"lam": [0.05, 0.5]}),
        ("perfedavg", {"alpha": [0.01, 0.03], "beta": [0.05]}),
    ],
)
def test_vmapped_sweep_equals_separate_runs(data, algorithm, grid):
    train, test, params = data
    common = dict(
        algorithm=algorithm, rounds=3, clients_per_round=3, test_clients=test,
        eval_fn=logistic_accuracy, eval_every=2,
    )  # fmt: skip
    hists = pj.federation.run_many(
        logistic_loss, params, train, seeds=[0, 5], grid=grid, strategy="vmap", **common
    )
    runs = points([0, 5], grid)
    assert len(hists) == len(runs)
    assert hists[0].rounds[0].clients != hists[-1].rounds[0].clients  # seeds sample apart
    for hist, p in zip(hists, runs, strict=True):
        options = dict(common)
        values = dict(p.values)
        if "lam" in values:
            options["algorithm"] = pj.algorithms.ditto(lam=values.pop("lam"))
        ref = pj.federation.run(
            logistic_loss, params, train, seed=p.seed, execution="vmap", **values, **options
        )
        _same(hist, ref)
        assert hist.config.seed == p.seed


def test_loop_strategy_equals_separate_runs_and_auto_vmaps_a_dense_model(data):
    train, _, params = data
    grid = {"lr": [0.03, 0.1]}
    loop = pj.federation.run_many(
        logistic_loss, params, train, seeds=[1, 2], grid=grid, strategy="loop", rounds=2,
        clients_per_round=4,
    )  # fmt: skip
    auto = pj.federation.run_many(
        logistic_loss, params, train, seeds=[1, 2], grid=grid, rounds=2, clients_per_round=4
    )
    for a, b, p in zip(loop, auto, points([1, 2], grid), strict=True):
        ref = pj.federation.run(
            logistic_loss, params, train, seed=p.seed, rounds=2, clients_per_round=4, **p.values
        )
        _same(a, ref, atol=0)
        _same(b, ref)


def test_stateful_vmapped_sweep(data):
    loss, metric, params, state = bn_functions()
    train, test, _ = data
    common = dict(rounds=2, model_state=state, test_clients=test, eval_fn=metric)
    hists = pj.federation.run_many(
        loss, params, train, seeds=[0, 1], grid={"lr": [0.05]}, strategy="vmap", **common
    )
    for hist, seed in zip(hists, [0, 1], strict=True):
        ref = pj.federation.run(loss, params, train, seed=seed, lr=0.05, execution="vmap", **common)
        _same(hist, ref)
        _close(hist.state.client_model_state, ref.state.client_model_state)


def test_refusals(data):
    train, _, params = data
    with pytest.raises(ValueError, match="not seed="):
        pj.federation.run_many(logistic_loss, params, train, seed=1)
    with pytest.raises(ValueError, match="neither run options"):
        pj.federation.run_many(logistic_loss, params, train, grid={"mu": [0.1]}, rounds=1)
    with pytest.raises(ValueError, match="cannot run secure"):
        pj.federation.run_many(
            logistic_loss, params, train, strategy="vmap", secure={"backend": "plain"}
        )
