#!/usr/bin/env bash
# One machine (CPU, one or more GPUs, or a single TPU VM): all local devices form the (data x space) mesh;
# --config.mesh.space=S splits each image's height over S of them (default 1: data parallel only).
# Usage: launch/local.sh configs/synthetic_demo.py runs/demo [--config.key=value ...]
set -euo pipefail
config=${1:?config file}; workdir=${2:?workdir}; shift 2
exec python -m pix2pixhd_jax.cli.train --config="$config" --workdir="$workdir" --distributed=off "$@"
