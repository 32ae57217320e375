#!/bin/bash
# The GPU rows of benchmarks/RESULTS.md from a lent machine (see its README), in two parts that
# each fit one call (10 minutes): carried wheels for what the image lacks, then the measurements.
# Usage there: bash benchmarks/gpu_session.sh speed|memory_forms   (logs and JSON under $OUT)
#   speed         float32 and bfloat16 1024x512 steps against the official code, interleaved; MFU
#                 against the measured matmul peak and the datasheet; the bf16 step's top 10 ops
#   memory_forms  float32 and bf16 2048x1024 memory with and without remat; the CPU conv rewrites
#                 against plain lax convs on this GPU, per layer and for the whole step
set -u
PART=${1:-speed}
OUT=${OUT:-/tmp/gpu_bench}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv
python3 -c "import jax, flax, optax, torch; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, jax.devices())"
run() { local t=$1; shift; echo "== $*"; timeout "$t" "$@" 2>&1 | tail -30; }
case "$PART" in
  speed)
    run 100 env XLA_PYTHON_CLIENT_PREALLOCATE=false python3 -m benchmarks.compare_official --config=bench_1024x512 --rounds=10 --device=cuda
    run 100 env XLA_PYTHON_CLIENT_PREALLOCATE=false python3 -m benchmarks.compare_official --config=bench_1024x512 --rounds=10 --device=cuda --dtype=bfloat16
    run 150 python3 -m benchmarks.run --suite=train --configs=bench_1024x512 --dtypes=bfloat16,float32 --remat=0 --steps=10 --out="$OUT/t1024"
    run 90 python3 -m benchmarks.op_profile --config=bench_1024x512 --dtype=bfloat16 --steps=5 --top=10 --out="$OUT/ops_1024_bf16.json"
    ;;
  memory_forms)
    run 200 python3 -m benchmarks.run --suite=train --configs=bench_2048x1024 --dtypes=float32,bfloat16 --remat=0,1 --steps=3 --out="$OUT/t2048"
    run 120 python3 -m benchmarks.run --suite=train --configs=bench_1024x512 --dtypes=float32 --remat=0 --conv_impls=rewrite,lax --steps=10 --out="$OUT/forms1024"
    run 120 python3 -m benchmarks.layer_profile --config=bench_1024x512 --baseline=lax --rounds=5
    ;;
  *) echo "unknown part $PART (speed | memory_forms)"; exit 2 ;;
esac
