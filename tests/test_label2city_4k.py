"""G3 (configs/label2city_4k.py): the 1024p run's trunk and enhancer carry over by name, and the
fixed phase trains only the new finest enhancer (and the output conv), as the official code."""

import jax
import numpy as np
from flax import traverse_util

from pix2pixhd_jax.configs import label2city_4k, tiny_test
from pix2pixhd_jax import run_config, sharding, staging
from pix2pixhd_jax.optim import mask_frozen_trunk
from pix2pixhd_jax.train_step import build_program


def _local(n_local_enhancers, ngf):
    config = tiny_test.get_config()
    config.model.netG, config.model.n_local_enhancers, config.model.ngf = "local", n_local_enhancers, ngf
    return config


def _init_state(config, seed=0):
    """A state of the config's shapes filled with random numbers (nothing compiled: eval_shape only)."""
    program = build_program(config, height=32, width=64, steps_per_epoch=4)
    abstract = jax.eval_shape(program.init, jax.random.PRNGKey(config.seed))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda a: rng.standard_normal(a.shape).astype(a.dtype), abstract)


def test_the_4k_config_is_valid_and_splits_its_height_over_8_and_16_devices():
    config = label2city_4k.get_config()
    run_config.validate(config)
    assert (config.model.netG, config.model.n_local_enhancers, config.data.loadSize) == ("local", 2, 4096)
    config.model.conv_impl = "lax"
    assert config.mesh.space == 8
    for space in (8, 16):
        sharding.check_spatial(2048, space, config.model, config.loss)


def test_a_two_enhancer_g_takes_the_one_enhancer_run_by_name():
    stage1 = _init_state(_local(1, 4))  # trunk width 8, enhancer width 4 (as 1024p: 64 and 32)
    g3 = _init_state(_local(2, 2), seed=1)  # trunk 8, enh1 4, new enh2 2
    new, copied, fresh = staging.transfer_from_stage1(g3, stage1)
    src = traverse_util.flatten_dict(jax.device_get(stage1.g_params["generator"]))
    dst = traverse_util.flatten_dict(jax.device_get(new.g_params["generator"]))
    carried = [k for k in dst if k[0] == "global_trunk" or k[0].startswith("enh1_")]
    assert carried and all(np.array_equal(dst[k], src[k]) for k in carried)
    assert any(p.startswith("generator/enh2_") for p in fresh)
    assert not any(p.startswith("generator/enh2_") for p in copied)


def test_the_fixed_phase_trains_only_the_finest_enhancer():
    state = _init_state(_local(2, 2))
    grads = jax.tree_util.tree_map(np.ones_like, jax.device_get(state.g_params))
    masked = traverse_util.flatten_dict(mask_frozen_trunk(grads, np.bool_(True)))
    frozen = lambda k: k[1] == "global_trunk" or k[1].startswith("enh1_")
    assert all((v == 0).all() for k, v in masked.items() if frozen(k))
    assert all((v == 1).all() for k, v in masked.items() if not frozen(k))  # enh2_* and out
    assert any(k[1].startswith("enh2_") for k in masked) and any(k[1] == "out" for k in masked)
    free = traverse_util.flatten_dict(mask_frozen_trunk(grads, np.bool_(False)))
    assert all((v == 1).all() for v in free.values())
