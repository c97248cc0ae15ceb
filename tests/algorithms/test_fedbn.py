"""FedBN on a BatchNorm MLP: normalisation parameters stay with each client, the rest is averaged.

The reference is a hand-written full-batch SGD loop per client (no Algorithm function), started
from the server's parameters with the client's own BatchNorm parameters put in by dict update.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from _algo_driver import Driver, make_context, max_abs_diff

import pppml_jax as pj

LR, K = 0.1, 2
N = [6.0, 10.0, 8.0]


class BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(4)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        return nn.Dense(1)(nn.relu(x))[:, 0]


MODEL = BNNet()


def loss(params, state, batch):
    z, updates = MODEL.apply(
        {"params": params, **state}, batch["x"], train=True, mutable=["batch_stats"]
    )
    return jnp.mean(jnp.logaddexp(0.0, z) - batch["y"] * z), {"batch_stats": updates["batch_stats"]}


def make_clients():
    rng = np.random.default_rng(0)
    clients = []
    for k, n in enumerate(N):
        x = rng.normal(size=(int(n), 3)) * (1.0 + k) + 2.0 * k  # feature shift per client
        y = (x[:, 0] - x[:, 1] > 2.0 * k * 0.0).astype(np.float32)
        clients.append({"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(y)})
    return clients


CLIENTS = make_clients()
VARIABLES = MODEL.init(jax.random.key(0), jnp.zeros((2, 3)), train=False)
PARAMS, MSTATE = VARIABLES["params"], {"batch_stats": VARIABLES["batch_stats"]}


def driver(algorithm):
    ctx = make_context(algorithm, loss, local_steps=K, lr=LR)
    return Driver(algorithm, ctx, CLIENTS, N, model_state=MSTATE)


@jax.jit
def own_training(start, state, batch):
    """K full-batch SGD steps, written out: the independent reference."""
    for _ in range(K):
        (_, state), g = jax.value_and_grad(loss, has_aux=True)(start, state, batch)
        start = jax.tree.map(lambda p, d: p - LR * d, start, g)
    return start, state


def test_bn_params_stay_local_and_shared_params_are_the_weighted_mean():
    d = driver(pj.algorithms.fedbn())
    state = d.round(d.init(PARAMS))
    params, _, clients, mstates = state
    params2, _, clients2, mstates2 = d.round(state)

    # round 2 by hand: each client from the server's params with its own BatchNorm params
    trained = []
    for i, batch in enumerate(CLIENTS):
        start = {**params, "BatchNorm_0": clients[i].params["BatchNorm_0"]}
        trained.append(own_training(start, mstates[i], batch))
    for i, (p_i, s_i) in enumerate(trained):
        assert max_abs_diff(clients2[i].params["BatchNorm_0"], p_i["BatchNorm_0"]) < 1e-5
        assert max_abs_diff(mstates2[i], s_i) < 1e-5  # statistics stay with the client too
        assert clients2[i].params["Dense_0"]["kernel"] is None  # nothing shared is kept
    w = np.asarray(N) / sum(N)
    for layer in ("Dense_0", "Dense_1"):
        mean = jax.tree.map(
            lambda *xs: sum(wi * x for wi, x in zip(w, xs, strict=True)),
            *[p[layer] for p, _ in trained],
        )
        assert max_abs_diff(params2[layer], mean) < 1e-5
    # the server's BatchNorm parameters are never touched; the clients' differ
    assert max_abs_diff(params2["BatchNorm_0"], PARAMS["BatchNorm_0"]) == 0.0
    scales = [np.asarray(c.params["BatchNorm_0"]["scale"]) for c in clients2]
    assert min(np.abs(scales[i] - scales[j]).max() for i, j in [(0, 1), (0, 2), (1, 2)]) > 1e-4

    # the personalized model: the server's shared params with the client's own BN params
    alg = d.alg
    personal = alg.personal_model(d.ctx, params2, clients2[1])
    assert personal["BatchNorm_0"]["scale"] is clients2[1].params["BatchNorm_0"]["scale"]
    assert personal["Dense_1"]["kernel"] is params2["Dense_1"]["kernel"]
    assert alg.fine_tune is False


def test_message_holds_none_for_bn_params():
    d = driver(pj.algorithms.fedbn(personal="BatchNorm"))
    params, server, clients, mstates = d.init(PARAMS)
    message, _, _, _ = d.client_round(params, server, clients[0], mstates[0], 0)
    assert message["BatchNorm_0"]["scale"] is None and message["BatchNorm_0"]["bias"] is None
    assert message["Dense_0"]["kernel"].shape == PARAMS["Dense_0"]["kernel"].shape


def test_matching_nothing_is_fedavg_exactly():
    fedbn = driver(pj.algorithms.fedbn(personal="no-such-layer")).run(PARAMS, 2)
    fedavg = driver(pj.algorithms.fedavg()).run(PARAMS, 2)
    assert max_abs_diff(fedbn[0], fedavg[0]) == 0.0  # server params
    assert max_abs_diff(fedbn[3], fedavg[3]) == 0.0  # clients' BatchNorm statistics
    assert jax.tree.leaves(fedbn[2]) == []  # nothing personal kept


def test_options_are_recorded_and_bad_ones_refused():
    assert pj.algorithms.fedbn().options == {"personal": ["BatchNorm", "norm", "Norm"]}
    for bad in ("", [], 3):
        try:
            pj.algorithms.fedbn(personal=bad)
        except ValueError as err:
            assert "personal=" in str(err)
        else:
            raise AssertionError(f"personal={bad!r} was accepted")
