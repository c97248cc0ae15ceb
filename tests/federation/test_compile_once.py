"""Compile once, run many: runs that differ only in seeds and float hyper-parameters share code.

Compilations are counted with JAX's own monitoring event for a backend compilation
(``/jax/core/compile/backend_compile_duration``, recorded once per XLA compilation,
primitives included); the persistent cache through its ``cache_hits`` event.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import bn_functions, make_clients

import pppml_jax as pj
from pppml_jax.federation import compilation

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
    """Counts XLA compilations in this process while active (a context manager)."""

    def __init__(self):
        self.count = 0
        self._active = False
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if self._active and event == COMPILE_EVENT:
            self.count += 1

    def __enter__(self):
        self.count, self._active = 0, True
        return self

    def __exit__(self, *exc):
        self._active = False


@pytest.fixture(scope="module")
def counter():
    return CompileCounter()


def squared_loss(params, batch):  # a loss no other test compiles
    z = batch["x"] @ params["w"] + params["b"]
    return jnp.mean((z - batch["y"]) ** 2) + 0.0 * jnp.sum(params["w"] ** 4)


def sign_accuracy(params, batch):
    z = batch["x"] @ params["w"] + params["b"]
    return ((z > 0.5) == (batch["y"] > 0.5)).astype(jnp.float32)


def _run(seed, lr, **options):
    train = make_clients([12, 30, 21, 45, 9], seed=1)
    test = make_clients([8, 10, 0, 16, 5], seed=2)
    params = {"w": jnp.zeros(5, jnp.float32), "b": jnp.zeros((), jnp.float32)}
    return pj.federation.run(
        squared_loss, params, train, rounds=2, seed=seed, lr=lr, test_clients=test,
        eval_fn=sign_accuracy, clients_per_round=3, **options,
    )  # fmt: skip


@pytest.mark.parametrize("execution", ["loop", "vmap"])
def test_second_run_with_other_seed_and_lr_compiles_nothing(counter, execution):
    with counter:
        first = _run(0, 0.02, execution=execution)
    compiled_first = counter.count
    with counter:
        second = _run(1, 0.01, execution=execution, server_lr=0.5, alpha=0.005)
    assert compiled_first > 0
    assert counter.count == 0, f"the second run compiled {counter.count} programs"
    assert first.rounds[0].clients != second.rounds[0].clients or not np.allclose(
        first.rounds[-1].train_loss, second.rounds[-1].train_loss
    )


def test_algorithm_values_with_other_hyperparameters_share_programs(counter):
    with counter:
        _run(0, 0.02, algorithm=pj.algorithms.fedprox(mu=0.01), execution="loop")
    with counter:
        _run(3, 0.01, algorithm=pj.algorithms.fedprox(mu=0.5, lr=0.005), execution="loop")
    assert counter.count == 0


def test_static_options_still_compile(counter):
    _run(0, 0.02, execution="loop", local_steps=2)
    with counter:
        _run(0, 0.02, execution="loop", local_steps=3)
    assert counter.count > 0  # the counter sees compilations; local_steps is static


def test_stateful_vmap_second_run_compiles_nothing(counter):
    loss, metric, params, state = bn_functions()
    train = make_clients([12, 30, 21, 45], seed=4)
    test = make_clients([8, 10, 3, 16], seed=5)

    def go(seed, lr):
        return pj.federation.run(
            loss, params, train, rounds=1, seed=seed, lr=lr, model_state=state,
            test_clients=test, eval_fn=metric, execution="vmap", model_state_mode="average",
        )  # fmt: skip

    go(0, 0.05)
    with counter:
        go(7, 0.01)
    assert counter.count == 0


def test_fingerprint_equal_for_rebuilt_algorithms_and_closures():
    fp, key = compilation.fingerprint, compilation.algorithm_key
    assert key(pj.algorithms.fedavg()) == key(pj.algorithms.fedavg(lr=0.3))
    assert key(pj.algorithms.fedavg()) != key(pj.algorithms.fedprox(mu=0.1))

    def make(scale):
        return lambda p, b: scale * squared_loss(p, b)

    assert fp(make(2.0)) == fp(make(2.0))
    assert fp(make(2.0)) != fp(make(3.0))  # a float baked into a closure is static
    array = np.ones(3)
    assert fp(lambda: array) != fp(lambda: np.ones(3))  # arrays compare by identity


SCRIPT = textwrap.dedent(
    """
    import sys, jax, jax.monitoring, jax.numpy as jnp, numpy as np
    import pppml_jax as pj
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
    from pppml_jax.federation.compilation import enable_compilation_cache
    enable_compilation_cache(sys.argv[1], min_compile_time_s=0.0)
    rng = np.random.default_rng(0)
    clients = [{"x": rng.normal(size=(9, 3)).astype(np.float32),
                "y": rng.normal(size=9).astype(np.float32)} for _ in range(3)]
    loss = lambda w, b: jnp.mean((b["x"] @ w - b["y"]) ** 2)
    pj.federation.run(loss, jnp.zeros(3), clients, rounds=1, execution="loop",
                      seed=int(sys.argv[2]), lr=float(sys.argv[3]))
    print("HITS", len(hits))
    """
)


def test_persistent_cache_serves_a_second_process(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}

    def hits(seed, lr):
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path / "xla"), str(seed), str(lr)],
            capture_output=True, text=True, env=env, timeout=300, check=True,
        )  # fmt: skip
        return int(out.stdout.split("HITS")[-1])

    assert hits(0, 0.1) == 0
    assert any((tmp_path / "xla").iterdir())
    assert hits(1, 0.3) > 0


def test_programs_are_released_near_the_kernels_memory_map_limit(monkeypatch):
    usage = compilation.memory_maps()
    if usage is not None:  # Linux: real counts
        assert 0 < usage[0] < usage[1]
    monkeypatch.setattr(compilation, "_released_at", [])
    compilation.clear()
    for i in range(3):
        compilation.shared("probe", (i,), lambda: object())
    assert compilation.cache_size() == 3
    monkeypatch.setattr(compilation, "memory_maps", lambda: (40, 100))  # below half
    compilation.shared("probe", (3,), lambda: object())
    assert compilation.cache_size() == 4
    kept = compilation.shared("probe", (0,), lambda: object())  # a hit never releases
    monkeypatch.setattr(compilation, "memory_maps", lambda: (60, 100))
    assert compilation.shared("probe", (0,), lambda: object()) is kept
    assert compilation.cache_size() == 4
    fresh = compilation.shared("probe", (4,), lambda: "built")  # a miss above half releases
    assert fresh == "built" and compilation.cache_size() == 1
    # 60 maps stayed in use: the next release waits for half of the 40 left (above 80), so
    # programs that stay alive do not make every later build release again
    monkeypatch.setattr(compilation, "memory_maps", lambda: (75, 100))
    compilation.shared("probe", (5,), lambda: object())
    assert compilation.cache_size() == 2
    monkeypatch.setattr(compilation, "memory_maps", lambda: (85, 100))
    compilation.shared("probe", (6,), lambda: object())
    assert compilation.cache_size() == 1
    compilation.clear()
