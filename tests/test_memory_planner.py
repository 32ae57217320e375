"""benchmarks/memory.py: splitting images over `space` cuts the per-device bytes of an activation-bound
step; shard_params cuts the per-device params + optimizer bytes by the data-axis size."""

import jax
import pytest

from benchmarks import memory
from pix2pixhd_jax.configs import tiny_test
from pix2pixhd_jax import sharding
from pix2pixhd_jax.train_step import build_program


def _config(space=1, shard_params=False):
    config = tiny_test.get_config()
    config.model.conv_impl = "lax"  # as the planner plans (the CPU rewrites refuse space > 1)
    config.loss.no_vgg_loss = False
    config.mesh.space, config.mesh.shard_params, config.mesh.min_shard_size = space, shard_params, 0
    config.data.batch_size = 1
    return config


def test_splitting_the_height_cuts_per_device_bytes():
    # 256 rows of a toy-width G and D with VGG16's 64-channel full-resolution maps: activations dominate.
    one = memory.plan(_config(space=1), jax.devices()[:1], height=256, width=32)
    four = memory.plan(_config(space=4), jax.devices()[:4], height=256, width=32)
    assert (one["data"], one["space"], four["data"], four["space"]) == (1, 1, 1, 4)
    assert one["total_bytes"] == one["argument_bytes"] + one["output_bytes"] + one["temp_bytes"] - one["alias_bytes"]
    assert one["param_opt_bytes"] < 0.05 * one["total_bytes"]  # activation-dominated
    assert one["total_bytes"] / four["total_bytes"] >= 2.5, (one, four)
    assert one["param_opt_bytes"] == four["param_opt_bytes"]  # params stay replicated without shard_params
    text = memory.report(four, _config(space=4))
    assert "data 1 x space 4" in text and f"{four['total_bytes'] / 2 ** 30:8.3f} GiB" in text


def test_shard_params_divides_param_and_optimizer_bytes_by_the_data_size():
    mesh = sharding.make_mesh(jax.devices()[:4])
    config = _config()
    config.model.ngf = 32  # arrays wide enough that almost every one divides by 4
    abstract = jax.eval_shape(build_program(config, height=64, width=32, steps_per_epoch=1).init,
                              jax.random.PRNGKey(0))
    replicated = memory.param_opt_bytes(abstract, sharding.state_shardings(abstract, mesh))
    split = memory.param_opt_bytes(abstract, sharding.state_shardings(abstract, mesh, shard_params=True))
    # Arrays no axis of which divides by 4 (the 3-channel output bias, Adam's counts) stay whole.
    assert replicated / 4 <= split <= 1.01 * replicated / 4, (replicated, split)


def test_planner_refuses_a_height_that_does_not_split():
    with pytest.raises(ValueError, match="mesh.space=4"):
        memory.plan(_config(space=4), jax.devices()[:4], height=100, width=32)
