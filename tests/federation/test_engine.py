"""The federated round: vmap equals loop, padding invariance, weighting, evaluation, failures."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import bn_functions, logistic_accuracy, logistic_loss, make_clients, max_abs_diff

import pppml_jax as pj
from pppml_jax.federation import Federation, FederationConfig, stack_clients


def run(train, params, **kw):
    kw.setdefault("rounds", 2)
    kw.setdefault("local_steps", 3)
    kw.setdefault("batch_size", 8)
    kw.setdefault("lr", 0.2)
    return pj.federation.run(logistic_loss, params, train, **kw)


@pytest.mark.parametrize(
    "options",
    [
        {"algorithm": "fedavg"},
        {"algorithm": "perfedavg", "variant": "hf", "alpha": 0.05, "beta": 0.3},
        {"algorithm": "perfedavg", "variant": "exact", "local_optimizer": "adam"},
        {"algorithm": "local"},
        {"algorithm": "fedavg", "clients_per_round": 2, "server_lr": 0.7},
        {"algorithm": "perfedavg", "variant": "fo", "step_programs": True},
        {"algorithm": "local", "step_programs": True},
        {"algorithm": "perfedavg", "variant": "exact", "step_programs": False},
    ],
)
def test_vmap_round_equals_loop_round(logistic, options):
    train, test, params = logistic
    kw = {"test_clients": test, "eval_fn": logistic_accuracy, **options}
    a = run(train, params, execution="vmap", **kw)
    b = run(train, params, execution="loop", **kw)
    assert max_abs_diff(a.state, b.state) < 1e-5
    assert a.rounds[-1]["per_client_personalized"] == pytest.approx(
        b.rounds[-1]["per_client_personalized"], nan_ok=True
    )
    assert [r["clients"] for r in a.rounds] == [r["clients"] for r in b.rounds]


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_padding_never_changes_a_result(logistic, execution):
    train, _, params = logistic
    config = FederationConfig(
        algorithm="perfedavg",
        rounds=1,
        local_steps=2,
        batch_size=8,
        execution=execution,
        variant="hf",
    )
    tight = Federation(logistic_loss, train, config)
    loose = Federation(logistic_loss, stack_clients(train, capacity=200), config)
    s_tight, s_loose = tight.init(params), loose.init(params)
    for _ in range(2):
        s_tight, _ = tight.round(s_tight)
        s_loose, _ = loose.round(s_loose)
    assert max_abs_diff(s_tight.params, s_loose.params) < 1e-6


def quadratic_clients(centres, sizes, dim):
    """Every example of client k is the point c_k: any batch's mean-loss gradient is w - c_k."""
    return [
        {"c": np.tile(np.asarray(c, np.float32), (n, 1))}
        for c, n in zip(centres, sizes, strict=True)
    ]


def quad_loss(w, batch):
    return 0.5 * jnp.mean(jnp.sum((w[None, :] - batch["c"]) ** 2, axis=1))


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_aggregation_weights_are_sample_counts(execution):
    rng = np.random.default_rng(0)
    dim, sizes, lr, tau, server_lr = 3, [5, 20, 75], 0.3, 4, 0.6
    centres = rng.normal(size=(3, dim))
    w0 = rng.normal(size=dim)
    # local SGD on 0.5 |w - c_k|^2 for tau steps: w_k = c_k + (1 - lr)^tau (w0 - c_k)
    local = centres + (1 - lr) ** tau * (w0 - centres)
    n = np.asarray(sizes, np.float64)
    mean_delta = (n[:, None] * (local - w0)).sum(0) / n.sum()
    expected = w0 + server_lr * mean_delta
    hist = pj.federation.run(
        quad_loss,
        jnp.asarray(w0, jnp.float32),
        quadratic_clients(centres, sizes, dim),
        rounds=1,
        local_steps=tau,
        batch_size=4,
        lr=lr,
        server_lr=server_lr,
        execution=execution,
    )
    np.testing.assert_allclose(np.asarray(hist.params), expected, rtol=1e-5, atol=1e-6)
    unweighted = w0 + server_lr * (local - w0).mean(0)
    assert np.abs(np.asarray(hist.params) - unweighted).max() > 1e-2


def test_fedavg_one_client_one_step_is_sgd(logistic):
    train, _, params = logistic
    client = train[1]
    n = len(client["y"])
    hist = pj.federation.run(
        logistic_loss, params, [client], rounds=1, local_steps=1, batch_size=n, lr=0.5
    )
    expected = pj.fedavg_step(logistic_loss, params, client, lr=0.5)  # the full batch
    assert max_abs_diff(hist.params, expected) < 1e-6


@pytest.mark.parametrize(
    "execution",
    [{"execution": "loop"}, {"execution": "vmap"}, {"execution": "vmap", "step_programs": True}],
)
def test_personalization_never_reads_test_data(logistic, execution):
    train, test, params = logistic
    config = FederationConfig(
        **execution,
        algorithm="perfedavg",
        rounds=1,
        local_steps=2,
        batch_size=8,
        personalize_steps=2,
        alpha=0.1,
    )
    corrupted = [{"x": np.full_like(t["x"], np.nan), "y": 1.0 - t["y"]} for t in test]
    clean = Federation(logistic_loss, train, config, eval_fn=logistic_accuracy, test_clients=test)
    dirty = Federation(
        logistic_loss, train, config, eval_fn=logistic_accuracy, test_clients=corrupted
    )
    state_c, _ = clean.round(clean.init(params))
    state_d, _ = dirty.round(dirty.init(params))
    a, b = clean.personalized_params(state_c), dirty.personalized_params(state_d)
    assert max_abs_diff(a, b) == 0.0
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(b))
    # the adaptation really moved the model, and evaluation scores exactly that adapted model
    assert max_abs_diff(a, jax.tree.map(lambda x: x[None], state_c.params)) > 1e-4
    ev = clean.evaluate(state_c)
    for k, t in enumerate(test):
        if len(t["y"]) == 0:
            assert np.isnan(ev.personalized[k])
            continue
        own = jax.tree.map(lambda x, k=k: x[k], a)
        assert ev.personalized[k] == pytest.approx(float(logistic_accuracy(own, t).mean()))
        assert ev.global_[k] == pytest.approx(float(logistic_accuracy(state_c.params, t).mean()))


def test_same_seed_same_result_other_seed_differs(logistic):
    train, _, params = logistic
    kw = {"algorithm": "perfedavg", "clients_per_round": 3}
    a, b, c = (
        run(train, params, seed=4, **kw),
        run(train, params, seed=4, **kw),
        run(train, params, seed=5, **kw),
    )
    assert max_abs_diff(a.params, b.params) == 0.0
    assert [r["clients"] for r in a.rounds] == [r["clients"] for r in b.rounds]
    assert max_abs_diff(a.params, c.params) > 1e-4


def test_continuing_from_state_equals_one_run(logistic):
    train, _, params = logistic
    whole = run(train, params, rounds=4, algorithm="fedavg", clients_per_round=2)
    half = run(train, params, rounds=2, algorithm="fedavg", clients_per_round=2)
    rest = run(train, params, rounds=2, algorithm="fedavg", clients_per_round=2, state=half.state)
    assert max_abs_diff(whole.params, rest.params) == 0.0
    assert [r["round"] for r in rest.rounds] == [3, 4]


def test_local_sampling_trains_only_sampled_clients(logistic):
    train, _, params = logistic
    fed = Federation(logistic_loss, train, FederationConfig(algorithm="local", clients_per_round=2))
    state = fed.init(params)
    new, info = fed.round(state)
    changed = [
        k
        for k in range(4)
        if max_abs_diff(jax.tree.map(lambda x, k=k: x[k], new.client_params), params) > 0
    ]
    assert changed == list(info.clients) and len(changed) == 2
    assert max_abs_diff(new.params, params) == 0.0


def test_failed_round_leaves_state_usable(logistic):
    train, _, params = logistic

    # finite data (non-finite data is refused up front) whose gradient is -inf: log(0) * b
    def loss(p, b):
        return logistic_loss(p, b) + jnp.mean(jnp.log(b["flag"])) * p["b"]

    flags = [np.full(len(c["y"]), 0.0 if k == 2 else 1.0, np.float32) for k, c in enumerate(train)]
    poisoned = [{**c, "flag": f} for c, f in zip(train, flags, strict=True)]
    config = FederationConfig(algorithm="fedavg", local_steps=1)
    bad = Federation(loss, poisoned, config)
    state = bad.init(params)
    before = jax.tree.map(np.array, state)
    with pytest.raises(pj.federation.NonFiniteError, match=r"clients \[2\]"):
        bad.round(state)
    assert state.round == 0 and max_abs_diff(state, before) == 0.0
    good = Federation(logistic_loss, train, config)
    new, _ = good.round(state)
    assert new.round == 1


def test_non_finite_training_data_is_refused_naming_client_and_example(logistic):
    train, _, _ = logistic
    poisoned = [dict(c) for c in train]
    x = train[1]["x"].copy()
    x[7, 3] = np.nan
    poisoned[1] = {"x": x, "y": train[1]["y"]}
    with pytest.raises(ValueError, match=r"clients\[1\]\['x'\] example 7 is not finite"):
        Federation(logistic_loss, poisoned, FederationConfig())


def test_one_stacked_dict_is_refused_with_the_fix(logistic):
    train, _, _ = logistic
    stacked = {
        "x": np.stack([c["x"][:8] for c in train]),
        "y": np.stack([c["y"][:8] for c in train]),
    }
    with pytest.raises(ValueError, match="one dict per client"):
        Federation(logistic_loss, stacked, FederationConfig())


def test_eval_fn_returning_a_scalar_is_refused(logistic):
    train, test, params = logistic
    mean_accuracy = lambda p, b: jnp.mean(logistic_accuracy(p, b))  # noqa: E731
    fed = Federation(
        logistic_loss, train, FederationConfig(), eval_fn=mean_accuracy, test_clients=test
    )
    with pytest.raises(ValueError, match=r"one value per example, shape \(16,\)"):
        fed.init(params)


def test_options_the_algorithm_ignores_are_warned_about(logistic):
    train, _, _ = logistic
    with pytest.warns(pj.federation.IgnoredOptionWarning, match="beta=0.3.*variant='hf'"):
        Federation(
            logistic_loss, train, FederationConfig(algorithm="fedavg", beta=0.3, variant="hf")
        )
    with pytest.warns(UserWarning, match="eval_fn was given without test_clients"):
        Federation(logistic_loss, train, FederationConfig(), eval_fn=logistic_accuracy)


def test_bools_are_not_counts():
    with pytest.raises(ValueError, match="rounds=True must be an integer"):
        FederationConfig(rounds=True)


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_batchnorm_state_local_or_averaged(execution):
    loss, accuracy, params, mstate = bn_functions()
    train = make_clients([16, 24, 32], seed=3, shift=2.0)
    test = make_clients([6, 6, 6], seed=4, shift=2.0)
    kw = {
        "rounds": 1,
        "local_steps": 2,
        "batch_size": 8,
        "lr": 0.1,
        "execution": execution,
        "test_clients": test,
        "eval_fn": accuracy,
        "model_state": mstate,
    }
    local = pj.federation.run(loss, params, train, model_state_mode="local", **kw)
    avg = pj.federation.run(loss, params, train, model_state_mode="average", **kw)
    per_client = local.state.client_model_state["batch_stats"]["BatchNorm_0"]["mean"]
    assert per_client.shape == (3, 8)
    # clients with shifted features keep different statistics; the global state is untouched
    assert float(jnp.abs(per_client[0] - per_client[2]).max()) > 0.1
    assert max_abs_diff(local.model_state, mstate) == 0.0
    # averaging: round 1 starts every client from the same state in both modes, so the averaged
    # statistics are the sample-weighted mean of the local mode's per-client statistics
    w = np.asarray([16, 24, 32], np.float64)
    expected = jax.tree.map(
        lambda x: np.tensordot(w / w.sum(), np.asarray(x), axes=1), local.state.client_model_state
    )
    assert max_abs_diff(avg.model_state, expected) < 1e-5
    assert avg.state.client_model_state is None
    assert max_abs_diff(local.params, avg.params) < 1e-6  # the parameters do not depend on it
    assert np.isfinite(local.rounds[-1]["mean_personalized"])


def test_bad_inputs_are_refused(logistic):
    train, test, params = logistic
    with pytest.raises(ValueError, match="algorithm='fedsgd' is unknown"):
        run(train, params, algorithm="fedsgd")
    with pytest.raises(ValueError, match=r"'fedprox' has no option\(s\) \['m'\]"):
        run(train, params, algorithm=pj.algorithms.make_algorithm({"name": "fedprox", "m": 1}))
    with pytest.raises(ValueError, match=r"lr=-0\.1"):
        run(train, params, lr=-0.1)
    with pytest.raises(ValueError, match="clients_per_round=0"):
        run(train, params, clients_per_round=0)
    with pytest.raises(ValueError, match=r"clients\[1\] has keys"):
        run([train[0], {"x": train[1]["x"]}], params)
    with pytest.raises(ValueError, match=r"per-example shape"):
        run([train[0], {"x": train[1]["x"][:, :3], "y": train[1]["y"]}], params)
    with pytest.raises(ValueError, match="disagree on the number of examples"):
        run([train[0], {"x": train[1]["x"], "y": train[1]["y"][:-1]}], params)
    with pytest.raises(ValueError, match="test_clients has 3 clients"):
        run(train, params, test_clients=test[:3], eval_fn=logistic_accuracy)
    with pytest.raises(ValueError, match="secure"):
        run(train, params, algorithm="local", secure={"backend": "plain"})


def test_evaluation_skips_examples_scored_nan(logistic):
    train, test, params = logistic

    def accuracy_or_nan(p, batch):  # examples with a negative first feature do not count
        acc = logistic_accuracy(p, batch)
        return jnp.where(batch["x"][:, 0] < 0, jnp.nan, acc)

    fed = Federation(
        logistic_loss,
        train,
        FederationConfig(personalize_steps=0, eval_batch_size=4),
        eval_fn=accuracy_or_nan,
        test_clients=test,
    )
    state, _ = fed.round(fed.init(params))
    ev = fed.evaluate(state)
    for k, t in enumerate(test):
        keep = t["x"][:, 0] >= 0
        if keep.sum() == 0:
            assert np.isnan(ev.global_[k])
            continue
        expected = float(logistic_accuracy(state.params, t)[keep].mean())
        assert ev.global_[k] == pytest.approx(expected)
