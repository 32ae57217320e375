"""Shared CLI plumbing for the inference tools: XLA CPU flag, repository root on sys.path, inputs."""
from __future__ import annotations

import os
import sys

# Same reason as main.py: XLA's Eigen conv path is much faster than YNNPACK on CPU; set before JAX starts.
_CPU_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def setup_environment() -> None:
    if _CPU_FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _CPU_FLAG).strip()
    sys.path.insert(0, os.getcwd())  # configs/ for checkpoints that predate config.features


def quiet_logs() -> None:
    """Orbax logs every restore at INFO through absl; keep warnings only."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)


def load_inputs(config, *, source: str = "", dataroot: str = "", phase: str = "", num: int = 4, seed_offset: int = 10_000):
    """Transformed examples (label, inst, image?) from the workdir config's data, or overrides.

    Synthetic data uses unseen scenes (seed + seed_offset) as the trainer's sample grids do.
    """
    import ml_collections

    from pix2pixhd_jax import train

    config = ml_collections.ConfigDict(config.to_dict())
    d = config.data
    d.source = source or d.source
    d.dataroot = dataroot or d.dataroot
    split = phase or (d.sample_split if d.source != "synthetic" else "test")
    if d.source == "synthetic":
        src = train.make_source(config, split, num, d.synthetic_seed + seed_offset)
    else:
        src = train.make_source(config, split, 0, 0, load_image=None)  # label maps alone are enough
    tcfg = train.transform_config(config)
    from pix2pixhd_jax.data.transforms import transform_example

    return [transform_example(src[i], tcfg, None, train=False) for i in range(min(num, len(src)))]
