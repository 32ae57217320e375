"""Build the feature bank of a trained workdir: python -m pix2pixhd_jax.encode_features --workdir W.

Runs E over config.features.split (default: the training split), clusters per class and writes
checkpoints/<step>/feature_bank.npz next to the weights it was encoded with.
"""
from __future__ import annotations

from pix2pixhd_jax.cli_common import setup_environment

setup_environment()

from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "training workdir (holds checkpoints/)")
_STEP = flags.DEFINE_integer("step", None, "checkpoint step (default: latest)")
_N_CLUSTERS = flags.DEFINE_integer("n_clusters", None, "override config.features.n_clusters")
_NUM = flags.DEFINE_integer("num_examples", None, "override config.features.num_examples (0 = whole split)")
_MIN_AREA = flags.DEFINE_float("min_area_fraction", None, "override config.features.min_area_fraction")
flags.mark_flags_as_required(["workdir"])


def main(argv) -> None:
    del argv
    from pix2pixhd_jax.cli_common import quiet_logs

    quiet_logs()
    from pix2pixhd_jax import features

    overrides = {k: v for k, v in (("n_clusters", _N_CLUSTERS.value), ("num_examples", _NUM.value),
                                   ("min_area_fraction", _MIN_AREA.value)) if v is not None}
    bank, path = features.encode_features(_WORKDIR.value, step=_STEP.value, config_overrides=overrides)
    print(f"feature bank of step {bank.meta['step']}: {bank.meta['num_regions']} regions from "
          f"{bank.meta['num_examples']} examples -> {path}")
    for c in sorted(bank.centers):
        print(f"  class {c:3d}: {len(bank.centers[c])} clusters, sizes {bank.sizes[c].tolist()}")


if __name__ == "__main__":
    app.run(main)
