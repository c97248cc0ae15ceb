#!/usr/bin/env bash
# GPU benchmarks, ready for the device machine (one H100/H200, nothing to download there).
#
#   bash benchmarks/gpu/run.sh [OUT_DIR]        # from the repository root; default $OUT or ./gpu_out
#
# The machine's image has JAX with CUDA, flax, optax, numpy, pyyaml, tqdm: the package runs from
# the source tree (PYTHONPATH), nothing is installed. About 6-8 minutes in all.
#   1. client_throughput: vmap against loop at 128 and 1,024 clients (goal: vmap >= 10x faster);
#   2. scaling: 10,000 clients held on the host, 100 and 1,000 sampled per round, chunk sizes.
set -euo pipefail
OUT_DIR=${1:-${OUT:-gpu_out}}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PYTHON:-python3}
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$PY" -c "import jax, flax, optax, numpy; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'numpy', numpy.__version__); print(jax.devices())"
} 2>&1 | tee "$OUT_DIR/env.txt"

timeout 300 "$PY" benchmarks/client_throughput.py --clients 128 1024 --repeats 5 --json \
  2>&1 | tee "$OUT_DIR/client_throughput.txt"

timeout 240 "$PY" benchmarks/scaling.py --gpu --json 2>&1 | tee "$OUT_DIR/scaling.txt"
