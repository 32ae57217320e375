#!/bin/bash
# The GPU rows of benchmarks/RESULTS.md in one call of a lent machine (see its README): carried
# wheels for what the image lacks, then train/infer suites and the official code side by side.
# Usage there: bash benchmarks/gpu_session.sh   (writes logs and JSON under $OUT)
set -u
OUT=${OUT:-/tmp/gpu_bench}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv
python3 -c "import jax, flax, optax, torch; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, jax.devices())"
run() { local t=$1; shift; echo "== $*"; timeout "$t" "$@" 2>&1 | tail -25; }
run 150 python3 -m benchmarks.run --suite=train --configs=bench_1024x512 --dtypes=bfloat16,float32 --remat=0 --steps=10 --out="$OUT/t1024"
run 90 env XLA_PYTHON_CLIENT_PREALLOCATE=false python3 -m benchmarks.compare_official --config=bench_1024x512 --rounds=10 --device=cuda
run 180 python3 -m benchmarks.run --suite=train --configs=bench_2048x1024 --dtypes=bfloat16,float32 --remat=1 --steps=5 --out="$OUT/t2048"
run 80 python3 -m benchmarks.run --suite=infer --configs=bench_1024x512,bench_2048x1024 --dtypes=bfloat16,float32 --steps=10 --out="$OUT/infer"
run 60 python3 -m benchmarks.run --suite=train --configs=bench_2048x1024 --dtypes=bfloat16 --remat=0 --steps=5 --out="$OUT/t2048nr"
