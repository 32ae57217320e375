"""Prepare a TFDS ArrayRecord dataset (no TensorFlow needed) for `data.source='tfds'`.

  python -m pix2pixhd_jax.cli.tfds_prepare --dataset synthetic_streets/512x256 --data_dir ~/tensorflow_datasets
  python -m pix2pixhd_jax.cli.tfds_prepare --dataset paired_folders/cityscapes \
      --manual_dir /data/cityscapes --data_dir gs://my-bucket/tfds

See data/tfds_builders.py for the datasets, their configs and the stored features.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from absl import flags

from pix2pixhd_jax.cli import process
from pix2pixhd_jax.data.tfds_builders import prepare


def define(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    flags.DEFINE_string("dataset", None, "name/config, e.g. synthetic_streets/512x256", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "TFDS data dir (default ~/tensorflow_datasets)", flag_values=fv)
    flags.DEFINE_string("manual_dir", None, "folder with the raw data for paired_folders", flag_values=fv)
    flags.mark_flag_as_required("dataset", flag_values=fv)


def body(fv: flags.FlagValues) -> int:
    builder = prepare(fv.dataset, data_dir=fv.data_dir, manual_dir=fv.manual_dir)
    print(f"prepared {builder.info.full_name} in {builder.data_dir}: "
          + ", ".join(f"{k}={v.num_examples}" for k, v in builder.info.splits.items()))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return process.run_command(define, body, argv, __doc__)


if __name__ == "__main__":
    process.exit_with(main(sys.argv))
