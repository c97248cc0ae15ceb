"""FedPer and FedRep on a two-layer linear logistic model against hand-written SGD loops.

The model is ``z = (x @ body.w) @ head.w + head.b``; the references below update plain dicts
with ``jax.grad`` of the loss and never call an Algorithm function or the partition helpers.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _algo_driver import Driver, make_context, max_abs_diff, stateless

import pppml_jax as pj

LR, K = 0.2, 4
N = [5.0, 9.0]


def model_loss(params, batch):
    z = (batch["x"] @ params["body"]["w"]) @ params["head"]["w"] + params["head"]["b"]
    return jnp.mean(jnp.logaddexp(0.0, z) - batch["y"] * z)


def make_clients():
    rng = np.random.default_rng(3)
    out = []
    for k, n in enumerate(N):
        x = rng.normal(size=(int(n), 3)) + k
        y = (x @ np.array([1.0, -1.0, 0.5]) * (1 - 2 * k) > 0).astype(np.float32)
        out.append({"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(y)})
    return out


CLIENTS = make_clients()
_r = np.random.default_rng(4)
PARAMS = {
    "body": {"w": jnp.asarray(_r.normal(size=(3, 2)), jnp.float32)},
    "head": {"w": jnp.asarray(_r.normal(size=2), jnp.float32), "b": jnp.float32(0.1)},
}


def driver(algorithm):
    ctx = make_context(algorithm, stateless(model_loss), local_steps=K, lr=LR)
    return Driver(algorithm, ctx, CLIENTS, N)


def weighted(trees):
    return jax.tree.map(lambda *xs: sum(w * x for w, x in zip(N, xs, strict=True)) / sum(N), *trees)


def reference(rounds, schedule):
    """``schedule(t)`` in {"both", "head", "body"}: what local step t trains."""
    body, heads = PARAMS["body"], [PARAMS["head"]] * len(CLIENTS)
    grad = jax.jit(jax.grad(model_loss))
    for _ in range(rounds):
        bodies = []
        for i, batch in enumerate(CLIENTS):
            b, h = body, heads[i]
            for t in range(K):
                g = grad({"body": b, "head": h}, batch)
                if schedule(t) in ("both", "body"):
                    b = jax.tree.map(lambda p, d: p - LR * d, b, g["body"])
                if schedule(t) in ("both", "head"):
                    h = jax.tree.map(lambda p, d: p - LR * d, h, g["head"])
            bodies.append(b)
            heads[i] = h
        body = weighted(bodies)
    return body, heads


def check_against(state, body, heads):
    params, _, clients, _ = state
    assert max_abs_diff(params["body"], body) < 1e-5
    assert max_abs_diff(params["head"], PARAMS["head"]) == 0.0  # the server's head never moves
    for i, h in enumerate(heads):
        assert max_abs_diff(clients[i].params["head"], h) < 1e-5
        assert clients[i].params["body"]["w"] is None


def test_fedper_trains_jointly_and_keeps_the_default_head():
    state = driver(pj.algorithms.fedper()).run(PARAMS, 2)
    check_against(state, *reference(2, lambda t: "both"))


@pytest.mark.parametrize("algorithm", [pj.algorithms.fedper, pj.algorithms.fedrep])
def test_head_never_leaves_the_client_and_personal_is_global_body_plus_own_head(algorithm):
    d = driver(algorithm(head="head"))
    state = d.round(d.init(PARAMS))
    params, server, clients, _ = state
    message, _, _, _ = d.client_round(params, server, clients[1], None, 1)
    assert message["head"]["w"] is None and message["head"]["b"] is None
    assert message["body"]["w"].shape == (3, 2)
    personal = d.alg.personal_model(d.ctx, params, clients[1])
    assert personal["body"]["w"] is params["body"]["w"]
    assert personal["head"]["w"] is clients[1].params["head"]["w"]
    assert max_abs_diff(clients[0].params["head"], clients[1].params["head"]) > 1e-3
    assert d.alg.fine_tune is False


@pytest.mark.parametrize("head_steps", [0, 1, 3, K + 1])
def test_fedrep_head_then_body_schedule(head_steps):
    state = driver(pj.algorithms.fedrep(head=["head/"], head_steps=head_steps)).run(PARAMS, 2)
    body, heads = reference(2, lambda t: "head" if t < head_steps else "body")
    check_against(state, body, heads)


def test_fedrep_default_head_steps_is_all_but_the_last_step():
    default = driver(pj.algorithms.fedrep()).run(PARAMS, 1)
    explicit = driver(pj.algorithms.fedrep(head_steps=K - 1)).run(PARAMS, 1)
    assert max_abs_diff(default, explicit) == 0.0


def test_bad_options_are_refused_naming_them():
    with pytest.raises(ValueError, match="head_steps="):
        pj.algorithms.fedrep(head_steps=-1)
    with pytest.raises(ValueError, match="head="):
        pj.algorithms.fedper(head=5)
    with pytest.raises(ValueError, match="lr="):
        pj.algorithms.fedrep(lr=0.0)
