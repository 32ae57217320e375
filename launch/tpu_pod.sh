#!/usr/bin/env bash
# Cloud TPU VM pod slice: the same command on every worker; jax.distributed.initialize() finds the
# coordinator from the TPU metadata (--distributed=auto). The workdir must be shared storage (gs://...).
# Usage: launch/tpu_pod.sh TPU_NAME ZONE configs/label2city_512p.py gs://bucket/runs/512p [--config.key=value ...]
# Images too large for one chip: --config.mesh.space=S splits each image's height over S chips. S must
# divide one host's chips (jax.local_device_count(): 4 or 8 on TPU VM hosts; train refuses other values):
# each host reads whole images and the row halo exchanges stay on the host's links. data = the rest of
# the slice; data.batch_size must be a multiple of it. Plan memory first:
#   python -m benchmarks.memory --config=configs/label2city_4k.py --devices=8 --space=8
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
