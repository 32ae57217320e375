"""Train the segmentation-score segmenter on a run's real photos.

  python -m pix2pixhd_jax.cli.train_segmenter --config=configs/synthetic_demo.py --out=runs/seg \
      [--config.eval.segmenter.steps=3000]

Hyperparameters: config.eval.segmenter; data: config.data. Writes params.npz + segmenter.json to
--out and prints the held-out real-image scores (the ceiling of the segmentation score).
"""
from __future__ import annotations

import json
import sys
from typing import Optional, Sequence

from pix2pixhd_jax.cli import process

from absl import flags

from pix2pixhd_jax import run_config
from pix2pixhd_jax.evaluation.segmenter_training import train_segmenter


def define(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    process.define_config_flag(fv, argv)
    flags.DEFINE_string("out", None, "directory for params.npz + segmenter.json", flag_values=fv)


def body(fv: flags.FlagValues) -> int:
    if not fv.out:
        raise process.UsageError("--out is required (the segmenter's directory)")
    config = process.loaded_config(fv)
    run_config.validate(config)
    spec = train_segmenter(config, fv.out)
    print(json.dumps(spec["heldout"], indent=1))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return process.run_command(define, body, argv, __doc__)


if __name__ == "__main__":
    process.exit_with(main(sys.argv))
