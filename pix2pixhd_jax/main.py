"""python -m pix2pixhd_jax.main: the training command under its original name (see cli/train.py)."""
import sys

from pix2pixhd_jax.cli import process, train

if __name__ == "__main__":
    process.exit_with(train.main(sys.argv))
