"""Write N synthetic street scenes to disk in pix2pixHD's official folder layout.

  python -m pix2pixhd_jax.cli.make_synthetic --out datasets/synthetic --num 1000 \
      --width 512 --height 256 --seed 0 [--phase train] [--start 0] [--jobs 2]

See data/make_synthetic.py for the files written.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from absl import flags

from pix2pixhd_jax.cli import process
from pix2pixhd_jax.data.make_synthetic import write_dataset


def define(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    flags.DEFINE_string("out", None, "dataset root (dataroot)", flag_values=fv)
    flags.DEFINE_integer("num", None, "number of scenes", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("width", 512, "scene width", lower_bound=8, flag_values=fv)
    flags.DEFINE_integer("height", 256, "scene height", lower_bound=8, flag_values=fv)
    flags.DEFINE_integer("seed", 0, "layout/appearance seed", flag_values=fv)
    flags.DEFINE_string("phase", "train", "folder prefix: train, test, ...", flag_values=fv)
    flags.DEFINE_integer("start", 0, "index of the first scene", lower_bound=0, flag_values=fv)
    flags.DEFINE_integer("jobs", 1, "worker processes", lower_bound=1, flag_values=fv)
    flags.mark_flags_as_required(["out", "num"], flag_values=fv)


def body(fv: flags.FlagValues) -> int:
    write_dataset(fv.out, fv.num, width=fv.width, height=fv.height, seed=fv.seed, phase=fv.phase, start=fv.start,
                  jobs=fv.jobs)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return process.run_command(define, body, argv, __doc__)


if __name__ == "__main__":
    process.exit_with(main(sys.argv))
