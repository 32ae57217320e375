"""Train: python -m pix2pixhd_jax.cli.train --config=configs/x.py --workdir=DIR [--config.model.ngf=32].

Writes checkpoints/, metrics.jsonl, tensorboard/ and samples/index.html under --workdir; rerunning
a workdir resumes it (a finished run returns at once). Config keys: configs/default.py.

Exit status: 0 finished; 1 failed (data, checkpoint, storage, non-finite losses); 2 a mistake in
the flags or the config (nothing written); 3 the workdir is in use by another live run (nothing
written); 130 stopped by Ctrl-C and 143 preempted by SIGTERM (a checkpoint was saved: rerun to resume).
"""
from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from pix2pixhd_jax.cli import process

import jax
from absl import flags

from pix2pixhd_jax import host_memory, run_config, stopping, storage, workdir_lease
from pix2pixhd_jax.run_folder import RunFolder

log = logging.getLogger("pix2pixhd_jax.cli.train")


def define(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    process.define_config_flag(fv, argv)
    flags.DEFINE_string("workdir", None, "output folder: checkpoints/, metrics.jsonl, samples/ (created on success "
                        "of the config and data checks)", flag_values=fv)
    flags.DEFINE_bool("take_over", False, "take the workdir's lease from a run that still seems alive (use only "
                      "when that run is certainly gone: two runs in one workdir destroy each other's checkpoints)",
                      flag_values=fv)
    process.define_distributed_flags(fv)


def _l1_story(result) -> str:
    """'held-out L1 0.5383 (step 0) -> 0.2726 (step 600)' from what this run measured."""
    measured = result.holdout_l1
    if not measured:
        return "no held-out L1 measured by this run"
    (s0, first), (s1, last) = measured[0], measured[-1]
    if s0 == s1:
        return f"held-out L1 {first:.4f} (step {s0})"
    return f"held-out L1 {first:.4f} (step {s0}) -> {last:.4f} (step {s1})"


def exit_line(result, workdir: str) -> str:
    """The one line a run ends with: where it stopped, what it saved, what it measured."""
    index = storage.join(RunFolder.of(workdir).samples, "index.html")
    if result.already_done:
        return f"done: {workdir} already holds step {result.step}; samples in {index}"
    if result.outcome == "finished":
        return f"done: step {result.step}, {_l1_story(result)}; samples in {index}"
    what = {stopping.INTERRUPTED: "interrupted", stopping.PREEMPTED: "preempted"}[result.outcome]
    if result.checkpoint_step == result.step:
        saved = f"checkpoint {result.step} saved; rerun to resume"
    elif result.checkpoint_step is not None:
        saved = f"nothing new to save (newest checkpoint: step {result.checkpoint_step}); rerun to resume"
    else:
        saved = "before the first step, nothing to save; rerun to start"
    return f"{what} at step {result.step}, {saved} ({_l1_story(result)})"


def body(fv: flags.FlagValues) -> int:
    if not fv.workdir:
        raise process.UsageError("--workdir is required (the run's output folder)")
    config = process.loaded_config(fv)
    run_config.validate(config)  # config mistakes end here, before any other line
    log.info("pix2pixhd-jax train: %s -> %s (loading the libraries and the data)", fv["config"].config_filename,
             fv.workdir)
    process.initialize_distributed(fv.distributed, fv.coordinator_address, fv.num_processes, fv.process_id)
    host_memory.keep_temporaries_resident()
    if not jax.distributed.is_initialized():  # the processes of a multi-process run refuse together, in train.run
        # A workdir in use refuses now, before the heavy imports and the data and model set-up (train.run
        # takes the lease itself, after the config and data checks).
        workdir_lease.WorkdirLease(RunFolder.of(fv.workdir), stale_s=config.train.lease_stale_s,
                                   take_over=fv.take_over, timeout_s=config.train.storage_timeout_s).check_free()
    from pix2pixhd_jax import train  # the heavy imports (Orbax, grain, TFDS) after the first line

    result = train.run(config, fv.workdir, take_over=fv.take_over, defaults=process.default_config())
    if jax.process_index() == 0:
        print(exit_line(result, fv.workdir), flush=True)
    return stopping.EXIT_STATUS.get(result.outcome, 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return process.run_command(define, body, argv, __doc__, verbose_logs=True)


if __name__ == "__main__":
    process.exit_with(main(sys.argv))
