"""Train: python -m pix2pixhd_jax.cli.train --config=configs/x.py --workdir=DIR [--config.model.ngf=32].

Writes checkpoints/, metrics.jsonl, tensorboard/ and samples/index.html under --workdir; rerunning
a workdir resumes it (a finished run returns at once). Config keys: configs/default.py.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from pix2pixhd_jax.cli import process

import jax  # noqa: E402  (after process: XLA flags first)
from absl import flags  # noqa: E402

from pix2pixhd_jax import host_memory, storage, train  # noqa: E402


def define(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    process.define_config_flag(fv, argv)
    flags.DEFINE_string("workdir", None, "output folder: checkpoints/, metrics.jsonl, samples/ (created on success "
                        "of the config and data checks)", flag_values=fv)
    process.define_distributed_flags(fv)


def body(fv: flags.FlagValues) -> int:
    if not fv.workdir:
        raise process.UsageError("--workdir is required (the run's output folder)")
    config = process.loaded_config(fv)
    process.initialize_distributed(fv.distributed, fv.coordinator_address, fv.num_processes, fv.process_id)
    host_memory.keep_temporaries_resident()
    result = train.run(config, fv.workdir)
    if jax.process_index() == 0:
        index = storage.join(os.fspath(storage.path(fv.workdir)), "samples", "index.html")
        if result.get("already_done"):
            print(f"done: {fv.workdir} already holds step {result['step']}; samples in {index}")
        else:
            print(f"done: step {result['step']}, held-out L1 {result['holdout_L1_start']:.4f} -> "
                  f"{result['holdout_L1_end']:.4f}; samples in {index}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return process.run_command(define, body, argv, __doc__, verbose_logs=True)


if __name__ == "__main__":
    process.exit_with(main(sys.argv))
