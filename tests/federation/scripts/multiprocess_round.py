"""One process of a multi-process federation (or the single-process reference), for the tests.

    python multiprocess_round.py OUT.json --devices-per-process 2 [--process-id I
        --num-processes N --coordinator 127.0.0.1:PORT]

Runs two rounds of FedAvg and of local training on a fixed logistic-regression federation with
the clients axis sharded over every device of every process, evaluates, and (process 0) writes
the final parameters and metrics as JSON.
"""

import argparse
import json
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--devices-per-process", type=int, default=2)
parser.add_argument("--process-id", type=int, default=None)
parser.add_argument("--num-processes", type=int, default=1)
parser.add_argument("--coordinator", default=None)
parser.add_argument("--chunk-size", type=int, default=None)
parser.add_argument("--data-placement", default="auto")
args = parser.parse_args()
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices_per_process}"

import jax  # noqa: E402

if args.process_id is not None:
    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from conftest import logistic_accuracy, logistic_loss, make_clients  # noqa: E402

from pppml_jax.federation import Federation, FederationConfig  # noqa: E402
from pppml_jax.federation.placement import to_host  # noqa: E402

train = make_clients([12, 30, 21, 45, 9, 17, 33, 8, 26, 14, 11], seed=1)
test = make_clients([5] * 11, seed=2)
params = {"w": jnp.zeros(5, jnp.float32), "b": jnp.zeros((), jnp.float32)}
out = {"devices": len(jax.devices()), "processes": jax.process_count()}
for algorithm in ("fedavg", "local"):
    config = FederationConfig(
        algorithm=algorithm,
        local_steps=3,
        batch_size=8,
        lr=0.2,
        execution="vmap",
        chunk_size=args.chunk_size,
        data_placement=args.data_placement,
    )
    fed = Federation(logistic_loss, train, config, eval_fn=logistic_accuracy, test_clients=test)
    state = fed.init(params)
    for _ in range(2):
        state, info = fed.round(state)
    ev = fed.evaluate(state)
    model = state.client_params if algorithm == "local" else state.params
    out[algorithm] = {
        "params": jax.tree.map(lambda x: np.asarray(x).tolist(), to_host(model)),
        "loss": info.train_loss,
        "personalized": ev.personalized.tolist(),
    }
if jax.process_index() == 0:
    with open(args.out, "w") as f:
        json.dump(out, f)
