"""The jitted train step: gradients equal the official three-pass formulation; bfloat16 compute stays
close to float32. (8 devices giving the same step as 1: tests/test_sharding.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pix2pixhd_jax.configs import tiny_test
from pix2pixhd_jax import losses
from pix2pixhd_jax.models.vgg import load_vgg
from pix2pixhd_jax.optim import make_optimizers
from pix2pixhd_jax.models.factory import build as make_networks, encode, generate, label_encoding
from pix2pixhd_jax.semantics import instance_average_pool, region_sizes
from pix2pixhd_jax.train_step import make_init_fn, make_train_step
from run_helpers import random_state

H, W = 16, 24


def _batch(n, seed=0, label_nc=6):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, label_nc, (n, H, W)).astype(np.int32)
    inst = (label * 1000 + rng.integers(0, 2, (n, H, W))).astype(np.int32)
    image = rng.uniform(-1, 1, (n, H, W, 3)).astype(np.float32)
    return {"label": label, "inst": inst, "image": image}


def _setup(config):
    vgg, vgg_vars = load_vgg(config.loss.vgg_backbone, config.loss.vgg_layers, None, config.loss.vgg_imagenet_norm)
    nets = make_networks(config, vgg)
    tx_g, tx_d = make_optimizers(config.optim)
    init = make_init_fn(config, nets, tx_g, tx_d, height=H, width=W)
    step = make_train_step(config, nets, tx_g, tx_d, steps_per_epoch=10)
    return nets, init, step, vgg_vars


def _config(loss=None, **model):
    config = tiny_test.get_config()
    # Plain lax convs compile in half the time of the CPU rewrites; what is checked here does not depend
    # on the conv form (the rewrites equal lax: test_conv_rewrites; full steps with them: test_recipe).
    config.model.conv_impl = "lax"
    config.model.update(model)
    config.loss.update(loss or {})
    return config


# The appearance options: E and G skips, pixel L1, region-colour and feature-colour terms.
APPEARANCE = {"instance_feat": True, "encoder_image_skip": True, "feature_skip_G": True,
              "loss": {"lambda_l1": 1.0, "lambda_region_colour": 2.0, "lambda_feature_colour": 3.0}}


# APPEARANCE includes instance_feat, so E's instance-pooled features are covered there.
@pytest.mark.parametrize("model", [{}, APPEARANCE])
def test_step_gradients_equal_official_three_pass_losses(model):
    config = _config(**model)
    extra = config.loss
    nets, init, step, vgg_vars = _setup(config)
    state = random_state(init, config.model.init_std)  # both sides step the same state: no init compile
    batch = jax.tree_util.tree_map(jnp.asarray, _batch(2))
    _, metrics = jax.jit(step)(state, batch, vgg_vars)

    # Official formulation: loss_G from D(fake) (grad to G); loss_D from D(fake.detach()) and D(real).
    def reference(g_params, d_params, batch):  # one jit: op-by-op ops outside compile one program per shape
        enc = label_encoding(batch, config.model)
        d = lambda p, img: nets.discriminator.apply({"params": p}, jnp.concatenate([enc, img], -1), True)

        def loss_g(g_params):
            fake, _ = generate(nets, config.model, g_params, state.g_collections, batch, enc, train=True)
            fake_out, real_out = d(d_params, fake), d(d_params, batch["image"])
            return (losses.gan_loss(fake_out, target_is_real=True, for_discriminator=False)
                    + losses.feature_matching_loss(fake_out, real_out, n_layers_D=config.model.n_layers_D,
                                                   num_D=config.model.num_D, lambda_feat=config.loss.lambda_feat)
                    + losses.perceptual_loss(nets.vgg.apply, vgg_vars, fake, batch["image"],
                                             layer_weights=tuple(config.loss.vgg_layer_weights),
                                             lambda_feat=config.loss.lambda_feat)
                    + appearance_terms(g_params, fake))

        def appearance_terms(g_params, fake):  # written out from the loss definitions, not the step's code
            if not extra.lambda_l1:
                return 0.0
            regions = batch["inst"]
            feats, _ = encode(nets, g_params, state.g_collections, batch["image"], regions, train=True)
            mean = lambda img: instance_average_pool(img, regions)
            sizes = region_sizes(regions)
            per_region = lambda a, b: jnp.mean(jnp.sum(jnp.abs(a - b).mean(-1) / sizes, (1, 2))
                                               / jnp.sum(1 / sizes, (1, 2)))
            return (extra.lambda_l1 * jnp.mean(jnp.abs(fake - batch["image"]))
                    + extra.lambda_region_colour * per_region(mean(fake), mean(batch["image"]))
                    + extra.lambda_feature_colour * per_region(feats[..., :3], mean(batch["image"])))

        def loss_d(d_params):
            fake, _ = generate(nets, config.model, g_params, state.g_collections, batch, enc, train=True)
            return losses.discriminator_loss(d(d_params, jax.lax.stop_gradient(fake)), d(d_params, batch["image"]))

        return jax.value_and_grad(loss_g)(g_params), jax.value_and_grad(loss_d)(d_params)

    (want_g, grad_g), (want_d, grad_d) = jax.jit(reference)(state.g_params, state.d_params, batch)
    norm = lambda grads: float(np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree_util.tree_leaves(jax.device_get(grads)))))
    np.testing.assert_allclose(metrics["loss_G"], want_g, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss_D"], want_d, rtol=1e-5)
    np.testing.assert_allclose(metrics["grad_norm_G"], norm(grad_g), rtol=1e-4)
    np.testing.assert_allclose(metrics["grad_norm_D"], norm(grad_d), rtol=1e-4)
    if model.get("instance_feat"):
        assert "encoder" in state.g_params
    if extra.lambda_l1:
        assert {"G_L1", "G_region_colour", "E_feature_colour"} <= set(metrics), sorted(metrics)


def test_bf16_step_is_finite_and_close_to_float32():
    batch = jax.tree_util.tree_map(jnp.asarray, _batch(2))
    results = {}
    for dtype in ("float32", "bfloat16"):
        config = _config(compute_dtype=dtype)
        nets, init, step, vgg_vars = _setup(config)
        state = random_state(init, config.model.init_std)
        new_state, metrics = jax.jit(step)(state, batch, vgg_vars)
        assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(new_state.g_params))
        results[dtype] = {k: float(v) for k, v in metrics.items()}
    for k in ("loss_G", "loss_D", "G_VGG", "G_GAN_Feat"):
        assert np.isfinite(results["bfloat16"][k])
        assert results["bfloat16"][k] == pytest.approx(results["float32"][k], rel=0.05), k
