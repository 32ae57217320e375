"""Coarse-to-fine staging: a local-enhancer run started from a global-generator run (train.init_from).

The end-to-end test trains stage 2 from a short tiny stage-1 run (the module fixture); the transfer
and the fixed trunk are also tested on initialised states, without compiling a step.
"""
import jax
import numpy as np
import pytest
from flax import traverse_util

from pix2pixhd_jax import sharding, staging, train
from pix2pixhd_jax.optim import mask_frozen_trunk, official_lr
from pix2pixhd_jax.train_step import build_program
from run_helpers import saved_state, tiny_config




@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A global-generator run of 2 steps (tiny_test's program, shared with test_train.py)."""
    workdir = str(tmp_path_factory.mktemp("stage1") / "global")
    return workdir, train.run(tiny_config(), workdir)




LOCAL = dict(model__netG="local", model__ngf=2, model__num_D=3, optim__niter_fix_global=1,
             data__synthetic_width=128, data__synthetic_height=64)


def _init_state(config):
    """The fresh state train.run starts `config` from (its program, mesh and shardings), so that the end-to-end
    run below finds its init compiled: one init program for the file instead of a one-device one besides."""
    plan = train.plan_run(config)
    return sharding.init_sharded(plan.program.init, plan.mesh, jax.random.PRNGKey(config.seed),
                                 shardings=sharding.shardings_of(plan.target))


def test_stage_transfer_maps_g1_into_the_trunk_and_d_scales_by_name(stage1):
    _, result = stage1
    g1 = traverse_util.flatten_dict(jax.device_get(result.state.g_params["generator"]))
    local = _init_state(tiny_config(**LOCAL))
    new, copied, fresh = staging.transfer_from_stage1(local, result.state)
    g2 = traverse_util.flatten_dict(jax.device_get(new.g_params["generator"]))
    trunk = {k[1:]: v for k, v in g2.items() if k[0] == "global_trunk"}
    assert set(trunk) == {k for k in g1 if k[0] != "out"}  # G1's output conv has no partner
    for k, v in trunk.items():
        np.testing.assert_array_equal(v, g1[k])
    assert any(p.startswith("generator/enh1") for p in fresh)
    # Official naming puts scale{i} at the same absolute resolution: scales 0, 1 copied, 2 fresh.
    assert any(p.startswith("scale0/") for p in copied) and any(p.startswith("scale2/") for p in fresh)
    d1 = set(traverse_util.flatten_dict(jax.device_get(result.state.d_params)))
    assert d1 <= set(traverse_util.flatten_dict(jax.device_get(new.d_params)))


def test_fixed_trunk_gets_no_update_while_fixed():
    config = tiny_config(**LOCAL)
    state = _init_state(config)
    grads = jax.tree_util.tree_map(np.ones_like, jax.device_get(state.g_params))
    masked = traverse_util.flatten_dict(mask_frozen_trunk(grads, np.bool_(True)))
    assert all((v == 0).all() for k, v in masked.items() if k[1] == "global_trunk")
    assert all((v == 1).all() for k, v in masked.items() if k[1] != "global_trunk")
    free = traverse_util.flatten_dict(mask_frozen_trunk(grads, np.bool_(False)))
    assert all((v == 1).all() for v in free.values())


def test_init_from_trains_the_enhancer_around_a_fixed_trunk_then_everything(stage1, tmp_path):
    """End to end: stage 2 from stage 1's workdir; 8 examples / batch 2 = 4 steps fixed, then joint."""
    workdir, result = stage1
    g1 = traverse_util.flatten_dict(jax.device_get(result.state.g_params["generator"]))
    local = dict(LOCAL, train__init_from=workdir)
    # One run through the switch; its checkpoint at step 4 holds G at the end of the fixed phase.
    joint = train.run(tiny_config(train__max_steps=5, train__checkpoint_every=4, **local), str(tmp_path / "local"))
    g2 = traverse_util.flatten_dict(saved_state(str(tmp_path / "local"), 4)["g_params"]["generator"])
    trunk = {k[1:]: v for k, v in g2.items() if k[0] == "global_trunk"}
    assert trunk and all(np.array_equal(v, g1[k]) for k, v in trunk.items())
    start = staging.transfer_from_stage1(_init_state(tiny_config(**local)), result.state)[0]
    g_start = traverse_util.flatten_dict(jax.device_get(start.g_params["generator"]))
    assert any(not np.array_equal(g2[k], g_start[k]) for k in g2 if k[0].startswith("enh1"))  # the enhancer trains
    g3 = traverse_util.flatten_dict(jax.device_get(joint.state.g_params["generator"]))
    assert any(not np.array_equal(g3[("global_trunk",) + k], g1[k]) for k in trunk)
    # A stage 2 whose trunk cannot hold G1 is refused; the check needs only the shapes of its state.
    bad = tiny_config(**{**local, "model__ngf": 4})
    shapes = jax.eval_shape(build_program(bad, height=64, width=128, steps_per_epoch=4).init, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="shares no generator array"):
        staging.init_from_stage1(shapes, workdir, sharding.make_mesh(jax.devices()[:2]), bad)


def test_official_lr_schedule_at_epoch_boundaries():
    kw = dict(lr=2e-4, niter=2, niter_decay=4, steps_per_epoch=10)
    lrs = {e: float(official_lr(np.int32((e - 1) * 10), **kw)) for e in range(1, 7)}
    # epochs 1..niter+1 at lr0, then lr0 * (1 - (e - niter - 1) / niter_decay); last epoch lr0/niter_decay.
    assert lrs == pytest.approx({1: 2e-4, 2: 2e-4, 3: 2e-4, 4: 1.5e-4, 5: 1e-4, 6: 0.5e-4})
    assert float(official_lr(np.int32(39), **kw)) == pytest.approx(1.5e-4)  # constant within an epoch
