#!/usr/bin/env bash
# Cloud TPU VM pod slice: the same command on every worker; jax.distributed.initialize() finds the
# coordinator from the TPU metadata (--distributed=auto). The workdir must be shared storage (gs://...).
# Usage: launch/tpu_pod.sh TPU_NAME ZONE configs/label2city_512p.py gs://bucket/runs/512p [--config.key=value ...]
set -euo pipefail
tpu=${1:?tpu name}; zone=${2:?zone}; config=${3:?config}; workdir=${4:?workdir}; shift 4
repo_url=${REPO_URL:-"$(git config --get remote.origin.url)"}
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "
  set -e
  [ -d pix2pixhd-jax ] || git clone $repo_url pix2pixhd-jax
  cd pix2pixhd-jax && git pull --ff-only
  pip install -q -e . 'jax[tpu]'
  python -m pix2pixhd_jax.cli.train --config=$config --workdir=$workdir --distributed=on $*
"
