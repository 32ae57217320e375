#!/usr/bin/env bash
# One machine (CPU, one or more GPUs, or a single TPU VM): all local devices form the data mesh.
# Usage: launch/local.sh configs/synthetic_demo.py runs/demo [--config.key=value ...]
set -euo pipefail
config=${1:?config file}; workdir=${2:?workdir}; shift 2
# On CPU, XLA's Eigen conv path is much faster than the default (pix2pixhd_jax.main also sets it).
export XLA_FLAGS="${XLA_FLAGS:-} --xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
exec python -m pix2pixhd_jax.main --config="$config" --workdir="$workdir" --distributed=off "$@"
