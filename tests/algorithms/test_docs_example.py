"""docs/algorithms.md's user-defined algorithm (FedAvg with server momentum) runs as written.

The last python block of the page is executed unchanged (it ends with a
``pj.federation.run``). Its algorithm is then driven by the engine-independent driver: with
momentum 0 it is FedAvg exactly, and on quadratics its server velocity follows the
recursion m <- momentum m + mean_i (w_i - w), w <- w + m written out here.
"""

import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from _algo_driver import Driver, make_context, max_abs_diff, stateless

import pppml_jax as pj

DOC = Path(__file__).resolve().parents[2] / "docs" / "algorithms.md"


def example_code() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)
    return blocks[-1]


def definitions() -> dict:
    """The block up to its data and run lines: the imports and the factory."""
    code = example_code()
    namespace: dict = {}
    exec(compile(code[: code.index("\nxs = ")], str(DOC), "exec"), namespace)
    return namespace


def test_the_example_is_short_and_runs_as_written():
    code = example_code()
    assert len(code.splitlines()) < 40
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    hist = namespace["hist"]
    assert len(hist.rounds) == 3
    assert all(np.isfinite(r.train_loss) for r in hist.rounds)


A = np.array([0.5, 2.0], np.float32)
C = np.array([[1.0, -2.0], [3.0, 0.5]], np.float32)
N = [1.0, 3.0]
LR, K = 0.1, 2
CLIENTS = [{"a": jnp.float32(a), "c": jnp.asarray(c)} for a, c in zip(A, C, strict=True)]
PARAMS = {"w": jnp.zeros(2, jnp.float32)}


def quad(params, batch):
    return 0.5 * batch["a"] * jnp.sum((params["w"] - batch["c"]) ** 2)


def driver(algorithm):
    ctx = make_context(algorithm, stateless(quad), local_steps=K, lr=LR)
    return Driver(algorithm, ctx, CLIENTS, N)


def test_momentum_zero_is_fedavg_and_the_velocity_recursion_holds():
    fedavg_momentum = definitions()["fedavg_momentum"]
    zero = driver(fedavg_momentum(momentum=0.0)).run(PARAMS, 3)[0]
    assert max_abs_diff(zero, driver(pj.algorithms.fedavg()).run(PARAMS, 3)[0]) == 0.0

    beta = 0.5
    params, velocity, _, _ = driver(fedavg_momentum(momentum=beta)).run(PARAMS, 3)
    w, m = np.zeros(2), np.zeros(2)
    p = np.asarray(N) / sum(N)
    r = (1 - LR * A) ** K  # K gradient steps on a_i/2 ||w - c_i||^2
    for _ in range(3):
        mean_delta = sum(p[i] * (C[i] + r[i] * (w - C[i]) - w) for i in range(2))
        m = beta * m + mean_delta
        w = w + m
    np.testing.assert_allclose(params["w"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(velocity["w"], m, rtol=1e-5, atol=1e-6)
