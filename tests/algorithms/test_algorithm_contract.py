"""The contract every built-in algorithm keeps with the engine, checked name by name.

For each name in ``pj.algorithms.BUILTINS``: the local step jits with a traced step index and
vmaps over clients; dtypes, shapes and pytree structures of the carry, the client state, the
message and the server state do not change from step to step or round to round; the client
state does not depend on which client it is; and ``make_algorithm`` refuses an unknown option
by name.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _algo_driver import make_context, stateless, weighted_mean

import pppml_jax as pj

REQUIRED = {"fedprox": {"mu": 0.1}, "ditto": {"lam": 0.1}}
K = 2


def logistic(params, batch):
    z = batch["x"] @ params["w"].astype(jnp.float32) + params["b"].astype(jnp.float32)
    return jnp.mean(jnp.logaddexp(0.0, z) - batch["y"] * z)


def batch(seed, n=6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return {"x": jnp.asarray(x), "y": jnp.asarray((x[:, 0] > 0).astype(np.float32))}


# a bfloat16 leaf next to a float32 one: steps must not promote either
PARAMS = {"w": jnp.full(3, 0.1, jnp.bfloat16), "b": jnp.float32(0.05)}


def signature(tree):
    """Structure, shapes and dtypes of a pytree (None leaves are part of the structure)."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, [(jnp.shape(x), jnp.asarray(x).dtype) for x in leaves]


def setup(name):
    alg = pj.algorithms.make_algorithm({"name": name, **REQUIRED.get(name, {})})
    ctx = make_context(alg, stateless(logistic), local_steps=K)
    return alg, ctx


@pytest.mark.parametrize("name", pj.algorithms.BUILTINS)
def test_jitted_traced_step_keeps_structures_and_dtypes(name):
    alg, ctx = setup(name)
    assert isinstance(alg, pj.algorithms.Algorithm) and alg.name == name
    server = alg.init_server(ctx, PARAMS)
    cs0 = alg.init_client(ctx, PARAMS)
    assert signature(alg.init_client(ctx, jax.tree.map(lambda x: x + 1, PARAMS))) == signature(cs0)

    step = jax.jit(
        lambda carry, t, cs, batches, b: alg.client_step(ctx, carry, None, batches, t, b, cs)
    )
    final = jax.jit(lambda carry, cs, b: alg.client_final(ctx, carry, b, cs))
    update = jax.jit(lambda p, s, mean: alg.server_update(ctx, p, s, mean))

    params, cs, messages = PARAMS, cs0, []
    for r in range(2):
        b = alg.broadcast(ctx, params, server)
        carry = alg.client_init(ctx, b, cs)
        sig = signature(carry)
        for t in range(K):
            batches = tuple(batch(10 * r + t + j) for j in range(alg.batches_per_step))
            carry, model_state, loss = step(carry, jnp.int32(t), cs, batches, b)
            assert signature(carry) == sig and model_state is None
            assert loss.shape == () and loss.dtype == jnp.float32
        message, cs = final(carry, cs, b)
        assert signature(cs) == signature(cs0)
        messages.append(message)
        params, new_server = update(params, server, weighted_mean([message], [1.0]))
        assert signature(params) == signature(PARAMS)
        assert signature(new_server) == signature(server)
        server = new_server
    assert signature(messages[0]) == signature(messages[1])
    for model in (alg.global_model, alg.personal_model):
        assert signature(model(ctx, params, cs)) == signature(PARAMS)


@pytest.mark.parametrize("name", pj.algorithms.BUILTINS)
def test_step_vmaps_over_clients(name):
    alg, ctx = setup(name)
    server = alg.init_server(ctx, PARAMS)
    b = alg.broadcast(ctx, PARAMS, server)
    one = alg.init_client(ctx, PARAMS)
    cs = jax.tree.map(lambda x: jnp.stack([x, x]), one)
    batches = tuple(
        jax.tree.map(lambda x, y: jnp.stack([x, y]), batch(j), batch(j + 5))
        for j in range(alg.batches_per_step)
    )

    def client(cs_i, batches_i):
        carry = alg.client_init(ctx, b, cs_i)
        carry, _, loss = alg.client_step(ctx, carry, None, batches_i, jnp.int32(0), b, cs_i)
        return alg.client_final(ctx, carry, b, cs_i), loss

    (messages, new_cs), losses = jax.jit(jax.vmap(client))(cs, batches)
    assert losses.shape == (2,)
    assert jax.tree.structure(new_cs) == jax.tree.structure(one)
    # each row equals running that client alone
    (m0, c0), _ = client(one, tuple(jax.tree.map(lambda x: x[0], bt) for bt in batches))
    for x, y in zip(jax.tree.leaves((m0, c0)), jax.tree.leaves((messages, new_cs)), strict=True):
        np.testing.assert_allclose(
            np.asarray(x, np.float32), np.asarray(y[0], np.float32), rtol=2e-2, atol=1e-5
        )


@pytest.mark.parametrize("name", pj.algorithms.BUILTINS)
def test_make_algorithm_refuses_an_unknown_option_by_name(name):
    with pytest.raises(ValueError, match="no_such_option"):
        pj.algorithms.make_algorithm({"name": name, "no_such_option": 1, **REQUIRED.get(name, {})})


@pytest.mark.parametrize("name", pj.algorithms.BUILTINS)
def test_options_are_json_able_and_hparams_floats(name):
    import json

    alg, _ = setup(name)
    json.dumps(dict(alg.options))
    assert all(v is None or isinstance(v, float) for v in alg.hparams.values()), alg.hparams
