"""Convert an official pix2pixHD `.pth` checkpoint into an Orbax checkpoint of our variables.

  python -m pix2pixhd_jax.cli.convert --net global --pth checkpoints/label2city_512p/latest_net_G.pth \
      --out converted/G --option input_nc=36 --option ngf=64

Options use the official names (see compat/official.py build_module); values are parsed as Python
literals. Load the result with compat.convert.load_converted(out).
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from pix2pixhd_jax.cli import process

import jax
from absl import flags

from pix2pixhd_jax import storage
from pix2pixhd_jax.compat.convert import convert, parse_options
from pix2pixhd_jax.compat.official import NETS


def define(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    flags.DEFINE_enum("net", None, list(NETS), "which official network the state dict holds", flag_values=fv)
    flags.DEFINE_string("pth", None, "official state dict, e.g. latest_net_G.pth", flag_values=fv)
    flags.DEFINE_string("out", None, "output folder", flag_values=fv)
    flags.DEFINE_multi_string("option", [], "official option name=value (repeatable)", flag_values=fv)
    flags.mark_flags_as_required(["net", "pth", "out"], flag_values=fv)


def body(fv: flags.FlagValues) -> int:
    variables = convert(fv.pth, fv.net, fv.out, parse_options(fv.option))
    n = sum(v.size for v in jax.tree_util.tree_leaves(variables))
    print(f"wrote {n:,} values of net={fv.net} to {os.fspath(storage.path(fv.out))}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return process.run_command(define, body, argv, __doc__)


if __name__ == "__main__":
    process.exit_with(main(sys.argv))
