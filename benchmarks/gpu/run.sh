#!/usr/bin/env bash
# GPU checks and benchmarks on the newest JAX release with its CUDA plugin (issue 13).
#
#   bash benchmarks/gpu/run.sh [OUT_DIR]         # from the repository root; default $OUT or ./gpu_out
#
# Python: $PYTHON, else .venv-gpu/bin/python (made by the README's setup: constraints-latest.txt
# plus jax[cuda12]), else python3 (a machine image that already has JAX with CUDA). About 8-10
# minutes in all:
#   1. env: versions, devices (fails if JAX sees no GPU);
#   2. tests: the engine and sweep tests on the GPU (vmap execution is the default there);
#   3. client_throughput: vmap against loop at 128 and 1,024 clients (goal: vmap >= 10x faster);
#   4. sweep: 5 seeds x 4 lrs of the quickstart-like U-Net, 20 separate runs against run_many;
#   5. scaling: 10,000 clients held on the host, 100 and 1,000 sampled per round, chunk sizes.
set -uo pipefail
OUT_DIR=${1:-${OUT:-gpu_out}}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ -x .venv-gpu/bin/python ]]; then PY=.venv-gpu/bin/python
else PY=python3; fi
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$PY" -c "import jax, flax, optax, numpy; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'numpy', numpy.__version__); print(jax.devices()); assert jax.default_backend() == 'gpu', 'JAX sees no GPU'"
} 2>&1 | tee "$OUT_DIR/env.txt" || exit 1

timeout 240 "$PY" -m pytest -q -x -p no:cacheprovider tests/federation/test_engine.py \
  tests/federation/test_compile_once.py tests/federation/test_sweep.py \
  2>&1 | tail -40 | tee "$OUT_DIR/tests.txt"

timeout 300 "$PY" benchmarks/client_throughput.py --clients 128 1024 --modes vmap loop bare \
  --repeats 5 --json 2>&1 | tee "$OUT_DIR/client_throughput.txt"

timeout 300 "$PY" benchmarks/sweep.py --model unet --json 2>&1 | tee "$OUT_DIR/sweep.txt"

timeout 240 "$PY" benchmarks/scaling.py --gpu --json 2>&1 | tee "$OUT_DIR/scaling.txt"
