"""Build the feature bank of a trained workdir: python -m pix2pixhd_jax.cli.encode_features --workdir W.

Runs E over config.features.split (default: the training split), clusters per class and writes
checkpoints/<step>/feature_bank.npz next to the weights it was encoded with.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from pix2pixhd_jax.cli import process

from absl import flags

from pix2pixhd_jax.inference import Synthesizer, encode_feature_bank


def define(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    flags.DEFINE_string("workdir", None, "training workdir (holds checkpoints/)", flag_values=fv)
    flags.DEFINE_integer("step", None, "checkpoint step (default: latest)", flag_values=fv)
    flags.DEFINE_integer("n_clusters", None, "override config.features.n_clusters", flag_values=fv)
    flags.DEFINE_integer("num_examples", None, "override config.features.num_examples (0 = whole split)",
                         flag_values=fv)
    flags.DEFINE_float("min_area_fraction", None, "override config.features.min_area_fraction", flag_values=fv)
    flags.mark_flag_as_required("workdir", flag_values=fv)


def body(fv: flags.FlagValues) -> int:
    overrides = {k: fv[k].value for k in ("n_clusters", "num_examples", "min_area_fraction") if fv[k].value is not None}
    synth = Synthesizer.from_workdir(fv.workdir, step=fv.step, defaults=process.default_config(), load_bank=False)
    bank, path = encode_feature_bank(synth, config_overrides=overrides)
    print(f"feature bank of step {bank.meta['step']}: {bank.meta['num_regions']} regions from "
          f"{bank.meta['num_examples']} examples -> {path}")
    for c in sorted(bank.centers):
        print(f"  class {c:3d}: {len(bank.centers[c])} clusters, sizes {bank.sizes[c].tolist()}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return process.run_command(define, body, argv, __doc__)


if __name__ == "__main__":
    process.exit_with(main(sys.argv))
