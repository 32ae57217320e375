"""Entry point: python -m pix2pixhd_jax.main --config=configs/x.py --workdir=DIR [--config.model.ngf=32]."""
from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

# XLA's Eigen conv path is 1-9x faster than the default YNNPACK one on CPU (PLATFORM_NOTES.md); the
# flag must be set before JAX starts and is harmless elsewhere.
_CPU_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
if _CPU_FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _CPU_FLAG).strip()

# Configs import each other as `configs.*`: run from the repository root or keep it importable.
sys.path.insert(0, os.getcwd())

import jax  # noqa: E402

from pix2pixhd_jax import train  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder: checkpoints, metrics.jsonl, samples/")
_DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                                 "jax.distributed.initialize(): 'auto' = on Cloud TPU pods and Slurm jobs")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (explicit multi-host)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "total processes (explicit multi-host)")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index (explicit multi-host)")
flags.mark_flags_as_required(["config", "workdir"])


def _maybe_initialize_distributed() -> None:
    explicit = _COORDINATOR.value is not None
    auto = any(k in os.environ for k in ("TPU_WORKER_HOSTNAMES", "SLURM_JOB_ID", "MEGASCALE_COORDINATOR_ADDRESS"))
    if _DISTRIBUTED.value == "off" or (_DISTRIBUTED.value == "auto" and not (explicit or auto)):
        return
    if explicit:
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    else:
        jax.distributed.initialize()


class _DropLibraryChatter(logging.Filter):
    """Orbax logs every checkpoint step at INFO through absl; keep its warnings only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def main(argv) -> None:
    del argv
    logging.getLogger().setLevel(logging.INFO)
    for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
        handler.addFilter(_DropLibraryChatter())
    _maybe_initialize_distributed()
    result = train.run(_CONFIG.value, _WORKDIR.value)
    if jax.process_index() == 0:
        print(f"done: step {result['step']}, held-out L1 {result['holdout_L1_start']:.4f} -> "
              f"{result['holdout_L1_end']:.4f}; samples in {os.path.join(os.path.abspath(_WORKDIR.value), 'samples', 'index.html')}")


if __name__ == "__main__":
    app.run(main)
