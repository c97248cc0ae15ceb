"""Seconds per round of Flower 1.42's simulation of client_throughput.py's workload (issue 2).

The workload is the one of ``client_throughput.py`` (docs/method.md 4): SmallCNN(features=(16, 32),
hidden=96, num_classes=10), 8,938 parameters; 64 random 28x28x1 images per client with labels
in 0..9; FedAvg weighted by example counts with every client in every round; 5 local SGD steps
of batch 16 at lr 0.05 from a fresh optax SGD state each round. Each Flower client trains with
pppml-jax's own client function (``make_client_update`` + ``sgd_rule``, unrolled), jitted once per
Ray worker process and reused; its data is generated and cached once per process.

Flower side: the Message API (``ClientApp`` with ``@app.train()``, ``ServerApp`` with
``@app.main()`` running ``flwr.serverapp.strategy.FedAvg.start``) under
``flwr.simulation.run_simulation`` with the Ray backend. A round is timed inside the server
loop, from the entry of ``configure_train`` to the return of ``aggregate_train`` (push,
client training, pull, aggregation); federated evaluation is off. The CPU seconds (user + system)
of the whole process tree are read at the same two points. Each (clients, client CPUs)
case runs in its own child process; the parent samples the resident memory of the child's
whole process tree (driver, Ray's GCS/raylet/agents and workers) every ``--sample-s`` seconds.

Run with the separate Flower virtualenv (flwr[simulation]==1.42.0, jax 0.7.1)::

    PYTHONPATH=. .venv-flower/bin/python benchmarks/flower_baseline.py --clients 8 32 128
    PYTHONPATH=. .venv-flower/bin/python benchmarks/flower_baseline.py --client-cpus default 1 \
        --json

With ``--json`` the last line is one JSON object ``{"results": [{"clients", "client_cpus",
"flower_s", "flower_cpu_s", "first_round_s", "peak_rss_mb", "peak_pss_mb", ...}, ...],
"machine": {...}}``: ``flower_s`` / ``flower_cpu_s`` are medians over the rounds after the first.
``--check`` replays the rounds without Flower and reports ``max_abs_diff_vs_replay``.
Flower 1.42 logs that ``run_simulation`` is deprecated in favour of ``flwr run``; both drive the
same Simulation Runtime, and only the Python entry point can be timed from one script.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import flwr
import jax
import numpy as np
import optax
import psutil
from _common import emit_json, median
from _common import machine as common_machine
from flax import traverse_util
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from pppml_jax.algorithms.client_update import make_client_update, sgd_rule
from pppml_jax.models import SmallCNN

_HERE = Path(__file__).resolve().parent

DEFAULT_CPUS = "default"
"""``--client-cpus`` value meaning: pass no client_resources, keep Flower's default."""

# ---------------------------------------------------------------------------------- client side
# Module-level caches of one Ray worker process: the jitted program per hyper-parameter set and
# the data per client. Ray imports this module by name in each worker, so they persist between
# the messages that worker processes.
_PROGRAMS: dict[tuple, object] = {}
_DATA: dict[tuple, dict] = {}


def make_model() -> SmallCNN:
    """The benchmark's model (same as client_throughput.py)."""
    return SmallCNN(features=(16, 32), hidden=96, num_classes=10)


def client_data(partition: int, *, examples: int, image: int, seed: int) -> dict:
    """Client ``partition``'s random training data, made once per process and kept on device.

    Returns:
      ``{"image": [examples, image, image, 1] float32, "label": [examples] int32 in 0..9}``.
    """
    key = (partition, examples, image, seed)
    if key not in _DATA:
        rng = np.random.default_rng([seed, partition])
        host = {
            "image": rng.normal(size=(examples, image, image, 1)).astype(np.float32),
            "label": rng.integers(0, 10, size=examples).astype(np.int32),
        }
        _DATA[key] = jax.device_put(host)
    return _DATA[key]


def client_program(*, local_steps: int, batch_size: int, lr: float, seed: int):
    """The jitted local training of one client, built once per process and hyper-parameters.

    Returns:
      ``program(params, data, num_examples, round_index, client_id) -> ClientResult``: pppml-jax's
      ``make_client_update(sgd_rule(), optax.sgd(lr))`` with the key
      ``fold_in(fold_in(key(seed), round_index), client_id)``.
    """
    cache_key = (local_steps, batch_size, lr, seed)
    if cache_key not in _PROGRAMS:
        model = make_model()

        def loss_fn(params, model_state, batch):
            logits = model.apply({"params": params}, batch["image"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
            return loss, model_state

        update = make_client_update(
            loss_fn,
            sgd_rule(),
            optax.sgd(lr),
            local_steps=local_steps,
            batch_size=batch_size,
            unroll=True,
        )

        def program(params, data, num_examples, round_index, client_id):
            key = jax.random.fold_in(
                jax.random.fold_in(jax.random.key(seed), round_index), client_id
            )
            return update(params, None, data, num_examples, key)

        _PROGRAMS[cache_key] = jax.jit(program)
    return _PROGRAMS[cache_key]


def to_record(params) -> ArrayRecord:
    """A params pytree as an ArrayRecord keyed by ``"Module/leaf"`` paths (float32 numpy)."""
    flat = traverse_util.flatten_dict(params, sep="/")
    return ArrayRecord({name: Array(np.asarray(value)) for name, value in flat.items()})


def from_record(record: ArrayRecord) -> dict:
    """Inverse of :func:`to_record`: the nested params dict of numpy arrays."""
    return traverse_util.unflatten_dict({k: v.numpy() for k, v in record.items()}, sep="/")


CLIENT_APP = ClientApp()


@CLIENT_APP.train()
def train(msg: Message, context: Context) -> Message:
    """One client's round: local training from the received model, reply with the new model."""
    config = msg.content["config"]
    examples, image, seed = int(config["examples"]), int(config["image"]), int(config["seed"])
    partition = int(context.node_config["partition-id"])
    program = client_program(
        local_steps=int(config["local-steps"]),
        batch_size=int(config["batch-size"]),
        lr=float(config["lr"]),
        seed=seed,
    )
    data = client_data(partition, examples=examples, image=image, seed=seed)
    params = from_record(msg.content["arrays"])
    start = time.perf_counter()
    result = program(
        params,
        data,
        np.int32(examples),
        np.int32(config["server-round"]),
        np.int32(partition),
    )
    reply_arrays = to_record(result.params)
    train_s = time.perf_counter() - start
    metrics = MetricRecord(
        {
            "train_loss": float(result.loss),
            "num-examples": examples,
            "train_s": train_s,
            "programs_in_process": len(_PROGRAMS),
            "compiled_variants": program._cache_size(),
            "pid": os.getpid(),
        }
    )
    return Message(RecordDict({"arrays": reply_arrays, "metrics": metrics}), reply_to=msg)


def replay(
    params: dict,
    *,
    num_clients: int,
    rounds: int,
    examples: int,
    image: int,
    local_steps: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> dict:
    """The same FedAvg rounds without Flower: every client's program, then the weighted mean.

    Returns:
      The global params dict (numpy float32) after ``rounds`` rounds from ``params``.
    """
    program = client_program(local_steps=local_steps, batch_size=batch_size, lr=lr, seed=seed)
    weight = examples / (examples * num_clients)
    for server_round in range(1, rounds + 1):
        total: dict = {}
        for k in range(num_clients):
            data = client_data(k, examples=examples, image=image, seed=seed)
            out = program(params, data, np.int32(examples), np.int32(server_round), np.int32(k))
            for name, value in traverse_util.flatten_dict(out.params, sep="/").items():
                value = np.asarray(value) * weight
                total[name] = value if name not in total else total[name] + value
        params = traverse_util.unflatten_dict(total, sep="/")
    return params


# ---------------------------------------------------------------------------------- server side
def tree_cpu_s(root: psutil.Process) -> float:
    """User + system CPU seconds used so far by ``root`` and its live descendants."""
    total = 0.0
    procs = [root]
    with contextlib.suppress(psutil.Error):
        procs += root.children(recursive=True)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


class TimedFedAvg(FedAvg):
    """Flower's FedAvg, timing each round from inside the server loop.

    A round runs from the entry of ``configure_train`` to the return of ``aggregate_train``. The
    CPU seconds of this process tree (driver, Ray daemons, Ray workers) are read at both ends.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.replies: list[int] = []
        self.errors: list[int] = []
        self.metrics: list[dict] = []
        self.client_pids: set[int] = set()
        self.cpu_starts: list[float] = []
        self.cpu_ends: list[float] = []
        self._process = psutil.Process()

    def configure_train(self, server_round, arrays, config, grid):
        self.cpu_starts.append(tree_cpu_s(self._process))
        self.starts.append(time.perf_counter())
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(tree_cpu_s(self._process))
        self.replies.append(sum(not m.has_error() for m in replies))
        self.errors.append(sum(m.has_error() for m in replies))
        self.metrics.append(dict(metrics) if metrics is not None else {})
        for m in replies:
            if not m.has_error():
                self.client_pids.add(int(m.content["metrics"]["pid"]))
        return arrays, metrics


def simulate(
    num_clients: int,
    *,
    rounds: int,
    client_cpus: str,
    examples: int,
    image: int,
    local_steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    check: bool = False,
) -> dict:
    """Runs one Flower simulation in this process and returns its timings.

    Args:
      num_clients: simulated SuperNodes; all of them train in every round.
      rounds: FedAvg rounds (the first includes start-up and compilation).
      client_cpus: ``"default"`` (Flower's default client_resources) or a number of CPUs per
        ClientApp (Ray actor).
      check: afterwards, replay the rounds in this process without Flower (same client program,
        example-weighted mean) and report the largest difference from Flower's final model.

    Raises:
      RuntimeError: a round got fewer than ``num_clients`` successful replies.
    """
    model = make_model()
    params = model.init(jax.random.key(seed), np.zeros((1, image, image, 1), np.float32))["params"]
    initial = to_record(jax.tree.map(np.asarray, params))
    n_params = int(sum(np.size(x) for x in jax.tree.leaves(params)))
    strategy = TimedFedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=num_clients,
        min_available_nodes=num_clients,
    )
    train_config = ConfigRecord(
        {
            "examples": examples,
            "image": image,
            "seed": seed,
            "local-steps": local_steps,
            "batch-size": batch_size,
            "lr": lr,
        }
    )
    server_app = ServerApp()

    final: dict = {}

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        result = strategy.start(
            grid=grid, initial_arrays=initial, num_rounds=rounds, train_config=train_config
        )
        final["arrays"] = result.arrays

    backend_config = None
    if client_cpus != DEFAULT_CPUS:
        backend_config = {"client_resources": {"num_cpus": float(client_cpus), "num_gpus": 0.0}}
    start = time.perf_counter()
    run_simulation(
        server_app=server_app,
        client_app=CLIENT_APP,
        num_supernodes=num_clients,
        backend_config=backend_config,
    )
    total_s = time.perf_counter() - start
    if len(strategy.ends) != rounds or any(r != num_clients for r in strategy.replies):
        raise RuntimeError(
            f"expected {rounds} rounds of {num_clients} replies, got replies {strategy.replies} "
            f"and errors {strategy.errors}"
        )
    round_s = [e - s for s, e in zip(strategy.starts, strategy.ends, strict=True)]
    gaps = [s - e for e, s in zip(strategy.ends[:-1], strategy.starts[1:], strict=True)]
    cpu_s = [e - s for s, e in zip(strategy.cpu_starts, strategy.cpu_ends, strict=True)]
    later = round_s[1:] or round_s
    train_s = [m.get("train_s", float("nan")) for m in strategy.metrics]
    replay_diff = None
    if check:
        expected = replay(
            from_record(initial),
            num_clients=num_clients,
            rounds=rounds,
            examples=examples,
            image=image,
            local_steps=local_steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
        )
        got = traverse_util.flatten_dict(from_record(final["arrays"]), sep="/")
        want = traverse_util.flatten_dict(expected, sep="/")
        replay_diff = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
    return {
        "clients": num_clients,
        "client_cpus": client_cpus,
        "client_processes": len(strategy.client_pids),
        "max_abs_diff_vs_replay": replay_diff,
        "flower_s": median(later),
        "round_s": round_s,
        "flower_cpu_s": median(cpu_s[1:] or cpu_s),
        "round_cpu_s": cpu_s,
        "first_round_s": round_s[0],
        "between_rounds_s": median(gaps) if gaps else 0.0,
        "client_train_s_mean": train_s,
        "client_compute_share": median(
            [n * num_clients / r for n, r in zip(train_s[1:], round_s[1:], strict=True)]
        )
        if rounds > 1
        else None,
        "train_loss": [m.get("train_loss") for m in strategy.metrics],
        "programs_per_process": [m.get("programs_in_process") for m in strategy.metrics],
        "compiled_variants": [m.get("compiled_variants") for m in strategy.metrics],
        "simulation_total_s": total_s,
        "rounds": rounds,
        "params": n_params,
    }


# ---------------------------------------------------------------------------------- parent side
def _tree_memory(root: psutil.Process) -> tuple[float, float, int]:
    """(sum of RSS, sum of PSS, process count) of ``root`` and its descendants, in MiB."""
    rss = pss = 0.0
    procs = [root]
    with contextlib.suppress(psutil.Error):
        procs += root.children(recursive=True)
    count = 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
        count += 1
    return rss / 2**20, pss / 2**20, count


class TreeSampler:
    """Samples a process tree's memory on a background thread and keeps the peaks."""

    def __init__(self, pid: int, *, interval_s: float):
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak_rss_mb = self.peak_pss_mb = 0.0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss, count = _tree_memory(self.root)
            self.peak_rss_mb = max(self.peak_rss_mb, rss)
            self.peak_pss_mb = max(self.peak_pss_mb, pss)
            self.peak_processes = max(self.peak_processes, count)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_case(num_clients: int, client_cpus: str, args: argparse.Namespace) -> dict:
    """Runs one simulation in a child process, sampling its process tree's memory."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--clients",
        str(num_clients),
        "--client-cpus",
        client_cpus,
        "--rounds",
        str(args.rounds),
        "--examples",
        str(args.examples),
        "--image",
        str(args.image),
        "--local-steps",
        str(args.local_steps),
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--seed",
        str(args.seed),
        *(["--check"] if args.check else []),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_HERE.parent), env.get("PYTHONPATH", "")) if p
    )
    load = os.getloadavg()
    with (
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        ) as child,
        TreeSampler(child.pid, interval_s=args.sample_s) as sampler,
    ):
        out, err = child.communicate()
    if child.returncode != 0:
        sys.stderr.write(err[-4000:])
        raise RuntimeError(f"the simulation of {num_clients} clients failed ({child.returncode})")
    if args.verbose:
        sys.stderr.write(err)
    result = json.loads(out.strip().splitlines()[-1])
    result.update(
        peak_rss_mb=sampler.peak_rss_mb,
        peak_pss_mb=sampler.peak_pss_mb,
        peak_processes=sampler.peak_processes,
        load_before=load,
    )
    return result


def machine() -> dict:
    """``_common.machine()`` plus Flower's and Ray's versions and the time of day."""
    return {
        **common_machine(),
        "flwr": flwr.__version__,
        "ray": __import__("ray").__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--rounds", type=int, default=6, help="rounds per simulation (>= 2)")
    parser.add_argument(
        "--client-cpus",
        nargs="+",
        default=[DEFAULT_CPUS],
        help="CPUs per ClientApp: 'default' (Flower's client_resources) and/or numbers",
    )
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--image", type=int, default=28)
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-s", type=float, default=0.25, help="memory sampling period")
    parser.add_argument("--verbose", action="store_true", help="show the simulations' logs")
    parser.add_argument(
        "--check",
        action="store_true",
        help="replay the rounds without Flower and report the largest difference",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 2:
        raise ValueError(f"--rounds={args.rounds} must be >= 2: the first round is not timed")
    for cpus in args.client_cpus:
        if cpus != DEFAULT_CPUS and not float(cpus) > 0:
            raise ValueError(f"--client-cpus {cpus!r} must be 'default' or a number > 0")

    if args.child:
        # Ray pickles functions of __main__ by value, which would defeat the per-process caches:
        # run the simulation from this file imported under its module name.
        import flower_baseline

        result = flower_baseline.simulate(
            args.clients[0],
            rounds=args.rounds,
            client_cpus=args.client_cpus[0],
            examples=args.examples,
            image=args.image,
            local_steps=args.local_steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            check=args.check,
        )
        sys.stdout.flush()
        print(json.dumps(result))
        return 0

    results = []
    print(
        f"{'clients':>8} {'cpus':>8} {'flower s/round':>15} {'CPU s/round':>12} {'first s':>8} "
        f"{'peak RSS MiB':>13}"
    )
    for n in args.clients:
        for cpus in args.client_cpus:
            r = run_case(n, cpus, args)
            results.append(r)
            print(
                f"{n:>8} {cpus:>8} {r['flower_s']:>15.3f} {r['flower_cpu_s']:>12.3f} "
                f"{r['first_round_s']:>8.1f} "
                f"{r['peak_rss_mb']:>13.0f}   (PSS {r['peak_pss_mb']:.0f} MiB, "
                f"{r['peak_processes']} processes, load {r['load_before'][0]:.2f})",
                flush=True,
            )
    if args.json:
        emit_json({"results": results, "machine": machine()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
