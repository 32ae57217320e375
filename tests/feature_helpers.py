"""Shared by the feature / inference / editing tests: a tiny feature-conditioned checkpoint, fast.

Training is not needed to test loading, sampling, editing and export, so the workdir holds a
freshly initialised state saved through the trainer's own checkpointing (seconds, not a train run).
"""
from __future__ import annotations


import numpy as np

from pix2pixhd_jax.configs import tiny_test
from pix2pixhd_jax import checkpointing
from pix2pixhd_jax.optim import make_optimizers
from pix2pixhd_jax.models.factory import build as make_networks
from pix2pixhd_jax.train_step import make_init_fn
from run_helpers import random_state


def feature_config(**features):
    config = tiny_test.get_config()
    config.model.instance_feat = True
    config.num_devices = 1
    config.features.n_clusters = 3
    config.features.num_examples = 4
    for k, v in features.items():
        config.features[k] = v
    return config


def colour_config(feat_num: int = 4):
    """feature_config of a colour-anchored model (loss.lambda_feature_colour > 0: set_colour applies).

    feat_num 4 leaves one channel past the colour, which set_colour must keep.
    """
    config = feature_config()
    config.model.feat_num = feat_num
    config.loss.lambda_feature_colour = 1.0
    return config


def make_workdir(path: str, config=None, step: int = 1, seed: int = 0) -> str:
    """Write an initialised tiny feature model as checkpoint `step` of workdir `path`."""
    config = config or feature_config()
    nets = make_networks(config)
    tx_g, tx_d = make_optimizers(config.optim)
    # Compiling the real init costs ~20 s on 2 cores; a state of the right structure with random
    # weights exercises the same loading and inference code.
    state = random_state(make_init_fn(config, nets, tx_g, tx_d, height=32, width=64), config.model.init_std, seed)
    manager = checkpointing.make_manager(path, max_to_keep=2, async_save=False)
    checkpointing.save(manager, step, state, config)
    manager.wait_until_finished()
    manager.close()
    return path


def scene(index: int = 0, width: int = 64, height: int = 32):
    from pix2pixhd_jax.data.synthetic import generate_example

    ex = generate_example(123, index, width, height)
    return ex["label"].astype(np.int32), ex["inst"].astype(np.int32), ex["image"].astype(np.float32) / 127.5 - 1.0


def encode_bank(workdir, **overrides):
    """(bank, path) of workdir's latest checkpoint, as the encode_features command builds it."""
    from pix2pixhd_jax.inference import Synthesizer, encode_feature_bank

    synth = Synthesizer.from_workdir(workdir, load_bank=False)
    return encode_feature_bank(synth, config_overrides=overrides, progress=False)


def workdir_with_bank(path: str, config=None) -> str:
    """make_workdir(path, config) with its feature bank encoded: what the editor and synthesizer open."""
    make_workdir(path, config)
    encode_bank(path)
    return path


def synthesizer_with_bank(path: str, config=None):
    """A Synthesizer of workdir_with_bank(path, config)."""
    from pix2pixhd_jax.inference import Synthesizer

    return Synthesizer.from_workdir(workdir_with_bank(path, config))
