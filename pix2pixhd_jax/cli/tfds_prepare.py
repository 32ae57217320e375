"""Prepare a TFDS ArrayRecord dataset (no TensorFlow needed) for `data.source='tfds'`.

  python -m pix2pixhd_jax.cli.tfds_prepare --dataset synthetic_streets/512x256 --data_dir ~/tensorflow_datasets
  python -m pix2pixhd_jax.cli.tfds_prepare --dataset synthetic_streets/512x256 --num_train 200 --num_test 50 \
      --data_dir gs://my-bucket/tfds      # a small set, named synthetic_streets/512x256_n200_50
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
    flags.DEFINE_integer("num_train", 0, "synthetic sets: training examples (0 = the config's full set)",
                         flag_values=fv)
    flags.DEFINE_integer("num_test", 0, "synthetic sets: test examples (0 = the config's full set)", flag_values=fv)
    flags.mark_flag_as_required("dataset", flag_values=fv)


def body(fv: flags.FlagValues) -> int:
    if fv.num_train < 0 or fv.num_test < 0:
        raise process.UsageError("--num_train and --num_test must be >= 0 (0 = the full set)")
    builder = prepare(fv.dataset, data_dir=fv.data_dir, manual_dir=fv.manual_dir, num_train=fv.num_train,
                      num_test=fv.num_test)
    name = builder.info.full_name.rsplit("/", 1)[0]
    print(f"prepared {builder.info.full_name} in {builder.data_dir}: "
          + ", ".join(f"{k}={v.num_examples}" for k, v in builder.info.splits.items())
          + f"; train on it with --config.data.source=tfds --config.data.tfds_name={name}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return process.run_command(define, body, argv, __doc__)


if __name__ == "__main__":
    process.exit_with(main(sys.argv))
