"""The layer options a config sets reach every conv and norm of G, D and E (models/layers.LayerOptions)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from pix2pixhd_jax.configs import tiny_test
from pix2pixhd_jax.models import factory
from pix2pixhd_jax.models.layers import Conv, ConvTranspose, Norm, SubpixelConv


def _leaf_layers(module: nn.Module, *inputs) -> list[nn.Module]:
    """Every Conv / ConvTranspose / SubpixelConv / Norm a module's init calls, as bound modules."""
    seen = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and isinstance(context.module, (Conv, ConvTranspose, SubpixelConv, Norm)):
            seen.append(context.module)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs)
    return seen


def _config(upsample_layer: str):
    config = tiny_test.get_config()
    m = config.model
    m.netG, m.n_local_enhancers, m.instance_feat = "local", 2, True
    m.norm, m.compute_dtype, m.conv_impl, m.init_std = "batch", "bfloat16", "lax", 0.05
    m.upsample_layer, m.spectral_norm_G, m.spectral_norm_D = upsample_layer, True, False
    m.g_attention, m.d_attention_scales = True, (0,)
    return config


@pytest.mark.parametrize("upsample_layer", ["transpose", "subpixel_icnr"])
def test_config_layer_options_reach_every_layer_of_every_network(upsample_layer):
    config = _config(upsample_layer)
    nets = factory.build(config)
    m, h, w = config.model, 16, 16
    expect_sn = {"G": True, "D": False, "E": False}
    layers = {
        "G": _leaf_layers(nets.generator, jnp.zeros((1, h, w, factory.generator_input_nc(m)))),
        "D": _leaf_layers(nets.discriminator, jnp.zeros((1, h, w, factory.discriminator_input_nc(m)))),
        "E": _leaf_layers(nets.encoder, jnp.zeros((1, h, w, 3)), jnp.zeros((1, h, w), jnp.int32)),
    }
    for net, found in layers.items():
        convs = [x for x in found if not isinstance(x, Norm)]
        norms = [x for x in found if isinstance(x, Norm)]
        assert convs and norms, net
        for conv in convs:
            assert (conv.dtype, conv.conv_impl, conv.init_std, conv.spectral_norm) == (
                jnp.bfloat16, "lax", 0.05, expect_sn[net]), (net, conv.scope.path)
        assert all((n.kind, n.dtype, n.conv_impl) == ("batch", jnp.bfloat16, "lax") for n in norms), net
    upsamplers = [x for x in layers["G"] + layers["E"] if isinstance(x, (ConvTranspose, SubpixelConv))]
    kind = ConvTranspose if upsample_layer == "transpose" else SubpixelConv
    # G: 2 trunk + 2 enhancer upsamplings; E: 2.
    assert len(upsamplers) == 6 and all(type(x) is kind for x in upsamplers)


def test_options_are_keyword_only_after_the_network_shape():
    """A fifth positional argument used to be `norm`; now it cannot land anywhere silently."""
    from pix2pixhd_jax.models import GlobalGenerator

    with pytest.raises((TypeError, ValueError)):
        GlobalGenerator(3, 4, 1, 1, "batch")
