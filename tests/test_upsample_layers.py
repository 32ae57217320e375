"""model.upsample_layer: lattice-free upsampling beside the official transposed conv, wired through G1,
the local enhancers and E, validated, refused where official weights or a resumed checkpoint cannot hold it."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from pix2pixhd_jax.configs import default
from pix2pixhd_jax import run_config
from pix2pixhd_jax.compat import official
from pix2pixhd_jax.models import factory
from pix2pixhd_jax.models.conv_rewrites import lax_conv
from pix2pixhd_jax.models.encoder import Encoder
from pix2pixhd_jax.models.generator import GlobalGenerator, LocalEnhancer, UpNormReLU
from pix2pixhd_jax.models.layers import (UPSAMPLE_LAYERS, reflect_pad, upsample_2x, upsample_bilinear_2x,
                                         upsample_nearest_2x)

NEW_LAYERS = ("resize_conv", "bilinear_conv", "subpixel_icnr")


class _UpsampleOnly(nn.Module):
    """The upsampling layer alone (no norm, no ReLU), with UpNormReLU's parameter names."""

    layer: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return upsample_2x(x, 5, self.layer, False)


def _params(layer: str, x: jax.Array) -> dict:
    """Init params of one upsampling unit with 5 output channels; they also fit _UpsampleOnly."""
    return UpNormReLU(5, norm="none", upsample_layer=layer).init(jax.random.PRNGKey(1), x)["params"]


def _conv_only(layer: str, x: jax.Array, params: dict) -> jax.Array:
    return _UpsampleOnly(layer).apply({"params": params}, x)


def test_bilinear_2x_matches_jax_image_resize():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 7, 3))
    np.testing.assert_allclose(upsample_bilinear_2x(x), jax.image.resize(x, (2, 10, 14, 3), "bilinear"), atol=1e-6)
    np.testing.assert_array_equal(upsample_nearest_2x(x)[:, ::2, 1::2], x)


@pytest.mark.parametrize("layer", UPSAMPLE_LAYERS)
def test_flat_input_comes_out_flat_except_for_the_transposed_conv(layer):
    """The checkerboard's origin: a transposed conv sums different taps into even and odd pixels.

    The resize-convs stay flat for any kernel, subpixel_icnr at its ICNR init.
    """
    x = jnp.full((1, 6, 8, 4), 0.7)
    params = _params(layer, x)
    y = np.asarray(_conv_only(layer, x, params))
    assert y.shape == (1, 12, 16, 5)
    interior = y[0, 2:-2, 2:-2]  # the transposed conv's zero padding also touches the last row/column
    spread = (interior.max(axis=(0, 1)) - interior.min(axis=(0, 1))).max()
    if layer == "transpose":
        assert spread > 1e-2
    else:
        assert spread < 1e-5


def test_subpixel_icnr_starts_as_nearest_neighbour_upsampling_of_one_conv():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 6, 8, 4))
    params = _params("subpixel_icnr", x)
    p = params["subpixel_icnr"]
    assert p["kernel"].shape == (3, 3, 4, 20) and p["bias"].shape == (5,)
    one_phase = lax_conv(reflect_pad(x, 1), p["kernel"][..., :5], 1, 0) + p["bias"]
    np.testing.assert_allclose(_conv_only("subpixel_icnr", x, params), upsample_nearest_2x(one_phase), atol=1e-5)


def _paths(module: nn.Module, *inputs: jax.Array) -> dict:
    """Parameter path -> shape of module's init (shapes only: nothing is compiled)."""
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs)
    return {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(variables["params"]).items()}


def test_transpose_keeps_the_official_parameter_paths_and_each_layer_has_its_own():
    x = jnp.zeros((1, 16, 16, 6))
    shapes = {layer: _paths(GlobalGenerator(3, 4, 2, 1, upsample_layer=layer), x) for layer in UPSAMPLE_LAYERS}
    assert shapes["transpose"]["up0/conv/kernel"] == (3, 3, 16, 8)
    assert shapes["resize_conv"]["up0/resize_conv/kernel"] == (3, 3, 16, 8)
    assert shapes["bilinear_conv"]["up1/bilinear_conv/kernel"] == (3, 3, 8, 4)
    assert shapes["subpixel_icnr"]["up0/subpixel_icnr/kernel"] == (3, 3, 16, 32)
    # No two layers share a parameter tree, so a checkpoint of one never restores into another.
    trees = [frozenset(s) for s in shapes.values()]
    assert len(set(trees)) == len(UPSAMPLE_LAYERS)


@pytest.mark.parametrize("layer", NEW_LAYERS)
def test_local_enhancer_and_encoder_use_the_layer_everywhere(layer):
    x = jnp.zeros((1, 16, 16, 6))
    g = _paths(LocalEnhancer(3, 4, 2, 1, 1, 1, upsample_layer=layer), x)
    units = [k.split("/") for k in g]
    layers_in_up_units = {p[i + 1] for p in units for i, part in enumerate(p[:-1]) if re.fullmatch(r"up\d+|enh\d+_up", part)}
    assert layers_in_up_units == {layer}  # trunk (global_trunk/up{i}) and enhancer (enh1_up) alike
    e = _paths(Encoder(3, 4, 2, upsample_layer=layer), jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 8), jnp.int32))
    assert f"net/up0/{layer}/kernel" in e and "net/up0/conv/kernel" not in e


def test_factory_passes_the_config_key_to_g_and_e():
    config = default.get_config()
    config.model.instance_feat, config.model.upsample_layer = True, "bilinear_conv"
    nets = factory.build(config)
    assert nets.generator.upsample_layer == "bilinear_conv" and nets.encoder.upsample_layer == "bilinear_conv"
    assert default.get_config().model.upsample_layer == "transpose"  # the official recipe stays the default


def test_unknown_layer_is_refused_by_validate_and_by_the_module():
    config = default.get_config()
    config.model.upsample_layer = "deconv"
    with pytest.raises(run_config.ConfigError, match="model.upsample_layer='deconv'"):
        run_config.validate(config)
    with pytest.raises(ValueError, match="model.upsample_layer"):
        UpNormReLU(4, upsample_layer="deconv").init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 2)))


def test_a_resume_with_another_upsample_layer_is_a_conflict():
    saved, given = default.get_config(), default.get_config()
    given.model.upsample_layer = "resize_conv"
    conflicts = run_config.resume_conflicts(saved.to_dict(), given)
    assert ("model.upsample_layer", "transpose", "resize_conv") in conflicts
    given.model.upsample_impl = "subpixel"  # how the transposed conv is computed may still change
    assert [c[0] for c in run_config.resume_conflicts(saved.to_dict(), given)] == ["model.upsample_layer"]


@pytest.mark.parametrize("net", ["global", "local", "E"])
def test_official_import_refuses_a_non_transpose_model(net):
    with pytest.raises(ValueError, match="upsample_layer='resize_conv': official pix2pixHD checkpoints"):
        official.build_module(net, upsample_layer="resize_conv")
    module, _, _ = official.build_module(net, upsample_layer="transpose")
    assert module.upsample_layer == "transpose"


def test_every_layer_trains_and_the_cost_benchmark_times_each(monkeypatch):
    """The benchmark's G gradient for each layer is finite and reaches the upsampling weights; each is timed."""
    from benchmarks import upsample_cost

    made, make = {}, upsample_cost.g_grad_fn  # the gradient functions the benchmark timed, with their input
    monkeypatch.setattr(upsample_cost, "g_grad_fn",
                        lambda config, layer, x: made.setdefault(layer, (*make(config, layer, x), x))[:2])
    rows = upsample_cost.main(["--config=tiny_test", "--rounds=1"])
    assert [r["upsample_layer"] for r in rows] == list(UPSAMPLE_LAYERS) == list(made)
    assert all(r["g_fwd_bwd_s"] > 0 and r["size"] == "64x32" for r in rows)
    # The programs the benchmark compiled: gradients that reach every layer's weights.
    for layer, (grad, params, x) in made.items():
        kernel_grad = grad(params, x)["up0"]["conv" if layer == "transpose" else layer]["kernel"]
        assert np.isfinite(kernel_grad).all() and float(jnp.abs(kernel_grad).max()) > 0, layer
