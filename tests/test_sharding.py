"""The 2-D (data x space) mesh: a step with the batch split over devices, or images split over
devices (and params sharded), equals one device's step for the same global batch; odd heights fail
with the scale named; checkpoints move between mesh shapes."""

import functools

import jax
import numpy as np
import pytest

from pix2pixhd_jax.configs import tiny_test
from pix2pixhd_jax import checkpointing, sharding
from pix2pixhd_jax.models.factory import build as make_networks
from pix2pixhd_jax.models.vgg import load_vgg
from pix2pixhd_jax.optim import make_optimizers
from pix2pixhd_jax.train_step import make_init_fn, make_train_step

H, W = 64, 16  # on space=4: 16 rows per device, 2 at D's deepest level (1/8), the fewest check_spatial allows


def _config():
    config = tiny_test.get_config()
    config.model.instance_feat = True  # E's instance pooling and norm run split too
    config.model.conv_impl = "lax"  # what GPU/TPU run; the CPU rewrites are refused with space > 1
    # Biases before instance norm have a true gradient of 0; a larger eps keeps Adam's first step a
    # smooth function of their float noise (as test_train_step does), so params compare at float32 tolerance.
    config.optim.eps = 1e-3
    config.mesh.min_shard_size = 0  # the toy arrays are tiny: shard every one that divides
    return config


def _batch(n, seed=0, label_nc=35):
    rng = np.random.default_rng(seed)
    # Blocky labels: instance regions that span the device boundaries of the split rows.
    label = np.repeat(rng.integers(0, label_nc, (n, H // 16, W)), 16, axis=1).astype(np.int32)
    inst = (label * 1000 + rng.integers(0, 2, (n, 1, W))).astype(np.int32)
    image = rng.uniform(-1, 1, (n, H, W, 3)).astype(np.float32)
    return {"label": label, "inst": inst, "image": image}


class _Setup:
    """Networks, init and step of the tiny config, built once for every mesh of this module."""

    def __init__(self):
        self.config = config = _config()
        l = config.loss
        vgg, self.vgg_vars = load_vgg(l.vgg_backbone, l.vgg_layers, None, l.vgg_imagenet_norm)
        nets = make_networks(config, vgg)
        tx_g, tx_d = make_optimizers(config.optim)
        self.init = make_init_fn(config, nets, tx_g, tx_d, height=H, width=W)
        self.step = make_train_step(config, nets, tx_g, tx_d, steps_per_epoch=10)
        self.abstract = jax.eval_shape(self.init, jax.random.PRNGKey(0))

        self.meshes = {}

    @functools.cache
    def initial_state(self):
        """The fresh state, created once on one device, kept on the host (the steps donate their inputs)."""
        mesh, state_sh, _, _ = self.on(1, 1)
        return jax.device_get(sharding.init_sharded(self.init, mesh, jax.random.PRNGKey(0), shardings=state_sh))

    def on(self, data: int, space: int, shard_params: bool = False):
        """(mesh, state shardings, jitted step, vgg variables) on the first data*space devices, built once."""
        key = (data, space, shard_params)
        if key not in self.meshes:
            mesh = sharding.make_mesh(jax.devices()[: data * space], space=space)
            state_sh = sharding.state_shardings(self.abstract, mesh, shard_params, self.config.mesh.min_shard_size)
            step = sharding.jit_train_step(self.step, self.abstract, mesh, state_sh)
            self.meshes[key] = mesh, state_sh, step, jax.device_put(self.vgg_vars, sharding.replicated(mesh))
        return self.meshes[key]


@pytest.fixture(scope="module")
def setup():
    return _Setup()


def _step(setup, data, space, shard_params=False, state=None, seed=0, n=4):
    """One step on a global batch of n from a fresh (or the given) state; returns (state, metrics, state shardings)."""
    mesh, state_sh, step, vgg_vars = setup.on(data, space, shard_params)
    if state is None and shard_params:  # created at its sharding, as train does
        state = sharding.init_sharded(setup.init, mesh, jax.random.PRNGKey(0), shardings=state_sh)
    else:  # the one-device initial state, copied from the host: one init compile for these meshes
        state = jax.device_put(setup.initial_state() if state is None else state, state_sh)
    new_state, metrics = step(state, sharding.global_batch(_batch(n, seed), mesh), vgg_vars)
    return new_state, {k: float(v) for k, v in metrics.items()}, state_sh


def _assert_states_close(a, b, tol=3e-5):
    """Every array within tol x the largest value of its side (float32 reductions in another order)."""
    for side in ("g_params", "d_params", "g_opt_state", "d_opt_state", "g_collections"):
        la, lb = jax.tree_util.tree_leaves(jax.device_get(getattr(a, side))), jax.tree_util.tree_leaves(
            jax.device_get(getattr(b, side)))
        assert len(la) == len(lb), side
        scale = max([float(np.abs(x).max()) for x in la], default=0.0)
        for x, y in zip(la, lb):
            np.testing.assert_allclose(y, x, rtol=0, atol=tol * scale, err_msg=side)


@pytest.fixture(scope="module")
def one_device(setup):
    """The one-device step on the global batch of 4, run once for every mesh compared with it."""
    return _step(setup, 1, 1)


# Every case steps the same 4 images, so one one-device step (one compile) serves them all: data4 splits
# the batch only (one image per device); the split-image cases run on all 8 devices. (With 8 images a
# few of Adam's first moments differ by 4.4e-5 of the tree's scale, above the 3e-5 tolerance.)
@pytest.mark.parametrize("data,space,shard_params", [(4, 1, False), (2, 4, False), (4, 2, True)],
                         ids=["data4", "data2_space4", "data4_space2_shard_params"])
def test_sharded_step_equals_one_device(setup, one_device, data, space, shard_params):
    assert len(jax.devices()) == 8, "conftest should provide 8 CPU devices"
    state1, metrics1, _ = one_device
    state8, metrics8, state_sh = _step(setup, data, space, shard_params)
    assert int(state8.step) == 1 and set(metrics8) == set(metrics1)
    for k in metrics1:  # losses (instance-norm statistics and loss means all-reduced), grad norms, lr
        assert metrics8[k] == pytest.approx(metrics1[k], rel=1e-5, abs=1e-6), k
    _assert_states_close(state1, state8)
    specs = [str(x.sharding.spec) for x in jax.tree_util.tree_leaves(state8.g_opt_state)]
    assert specs == [str(s.spec) for s in jax.tree_util.tree_leaves(state_sh.g_opt_state)]  # stored as planned
    assert any(sharding.DATA_AXIS in s for s in specs) == shard_params, specs


def test_checkpoint_moves_between_mesh_shapes(setup, tmp_path):
    """Saved split on (data=4, space=2) with sharded params, restored onto one device and back: exact."""
    state, _, sharded_sh = _step(setup, 4, 2, shard_params=True)
    manager = checkpointing.make_manager(str(tmp_path), max_to_keep=2, async_save=False)
    checkpointing.save(manager, 1, state, setup.config)
    saved = jax.device_get(state)
    _, one_sh, _, _ = setup.on(1, 1)
    restored, step = checkpointing.restore(manager, checkpointing.abstract_with_sharding(setup.abstract, one_sh))
    assert step == 1
    for a, b, sh in zip(jax.tree_util.tree_leaves(saved), jax.tree_util.tree_leaves(restored),
                        jax.tree_util.tree_leaves(one_sh)):
        np.testing.assert_array_equal(np.asarray(b), a)
        assert b.sharding.is_equivalent_to(sh, b.ndim)
    # The resumed step on one device continues the sharded run. Its inputs already differ by step 1's
    # float32 noise, which the gradients amplify (measured 1e-4 of the tree's scale in Adam's first moment).
    resumed, metrics1, _ = _step(setup, 1, 1, state=restored, seed=1)
    continued, metrics8, _ = _step(setup, 4, 2, shard_params=True, state=state, seed=1)
    for k in metrics1:
        assert metrics8[k] == pytest.approx(metrics1[k], rel=1e-5, abs=1e-6), k
    _assert_states_close(resumed, continued, tol=3e-4)
    # And back: one device's checkpoint restores split on the sharded mesh, bit for bit.
    checkpointing.save(manager, 2, resumed, setup.config)
    back, _ = checkpointing.restore(manager, checkpointing.abstract_with_sharding(setup.abstract, sharded_sh), step=2)
    for a, b, sh in zip(jax.tree_util.tree_leaves(jax.device_get(resumed)), jax.tree_util.tree_leaves(back),
                        jax.tree_util.tree_leaves(sharded_sh)):
        np.testing.assert_array_equal(np.asarray(b), a)
        assert b.sharding.is_equivalent_to(sh, b.ndim)
    manager.close()


def test_shard_params_splits_the_largest_divisible_axis():
    assert sharding.sharded_axis((3, 3, 64, 128), 8, 0) == 3
    assert sharding.sharded_axis((3, 3, 64, 3), 8, 0) == 2
    assert sharding.sharded_axis((3,), 8, 0) is None  # nothing divides: replicated
    assert sharding.sharded_axis((3, 3, 64, 128), 8, 10 ** 6) is None  # below min_shard_size: replicated
    assert sharding.sharded_axis((3, 3, 64, 128), 1, 0) is None


def test_odd_heights_fail_naming_the_scale_and_the_fix():
    config = _config()
    m, l = config.model, config.loss
    sharding.check_spatial(H, 4, m, l)  # the test's own size passes
    with pytest.raises(ValueError, match=r"image height 60 .* at G.s 1/2 level: 30 rows.*multiple of 32"):
        sharding.check_spatial(60, 4, m, l)
    with pytest.raises(ValueError, match=r"mesh.space=3 .* at the image: 64 rows"):
        sharding.check_spatial(64, 3, m, l)
    with pytest.raises(ValueError, match=r"1 row\(s\) per device at D scale 1's layer 2 output .* at least 64"):
        sharding.check_spatial(32, 4, m, l)
    m.conv_impl = "rewrite"
    with pytest.raises(ValueError, match="conv_impl=lax"):
        sharding.check_spatial(H, 4, m, l)
    with pytest.raises(ValueError, match="mesh.space=3 must .* divide the 8 devices"):
        sharding.make_mesh(space=3)


def test_configs_saved_before_the_mesh_section_complete_to_one_image_per_device():
    from pix2pixhd_jax.configs import default
    from pix2pixhd_jax import run_config

    saved = default.get_config().to_dict()
    del saved["mesh"]
    done = run_config.complete(saved, default.get_config())
    assert (done.mesh.space, done.mesh.shard_params) == (1, False)
    done.mesh.space = 0
    with pytest.raises(run_config.ConfigError, match="mesh.space=0"):
        run_config.validate(done)
