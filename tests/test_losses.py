"""GAN, feature-matching and perceptual losses on hand-computed inputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pix2pixhd_jax.losses import (discriminator_loss, feature_colour_loss, feature_matching_loss, gan_loss, perceptual_loss,
                                  pixel_l1_loss, region_colour_loss)


def _d_out(*score_values):
    """One scale per value: a 2x2 feature map of ones and a 2x2 score map filled with the value."""
    return [[jnp.ones((1, 2, 2, 3)), jnp.full((1, 2, 2, 1), v)] for v in score_values]


def test_lsgan_sums_over_scales():
    out = _d_out(0.5, 2.0)
    assert float(gan_loss(out, target_is_real=True)) == pytest.approx(0.25 + 1.0)
    assert float(gan_loss(out, target_is_real=False)) == pytest.approx(0.25 + 4.0)


def test_vanilla_is_bce_on_logits():
    out = _d_out(0.0, 3.0)
    want_real = np.log(2) + np.log1p(np.exp(-3.0))
    want_fake = np.log(2) + np.log1p(np.exp(3.0))
    assert float(gan_loss(out, target_is_real=True, loss_type="vanilla")) == pytest.approx(want_real, rel=1e-5)
    assert float(gan_loss(out, target_is_real=False, loss_type="vanilla")) == pytest.approx(want_fake, rel=1e-5)


def test_hinge_for_d_and_g():
    out = [[jnp.asarray([[[[0.5]], [[-2.0]]]])]]  # scores 0.5 and -2.0
    assert float(gan_loss(out, target_is_real=True, loss_type="hinge")) == pytest.approx((0.5 + 3.0) / 2)
    assert float(gan_loss(out, target_is_real=False, loss_type="hinge")) == pytest.approx((1.5 + 0.0) / 2)
    assert float(gan_loss(out, target_is_real=True, loss_type="hinge", for_discriminator=False)) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        gan_loss(out, target_is_real=True, loss_type="wgan")


def test_discriminator_loss_is_half_the_sum():
    fake, real = _d_out(0.5), _d_out(0.5)
    assert float(discriminator_loss(fake, real)) == pytest.approx(0.5 * (0.25 + 0.25))


def test_feature_matching_weights_and_excludes_scores():
    fake = [[jnp.full((1, 2, 2, 1), 1.0), jnp.full((1, 2, 2, 1), 3.0), jnp.full((1, 1, 1, 1), 100.0)]] * 2
    real = [[jnp.full((1, 2, 2, 1), 0.0), jnp.full((1, 2, 2, 1), 1.0), jnp.full((1, 1, 1, 1), -100.0)]] * 2
    # 2 scales x (|1-0| + |3-1|) x 4/(n_layers_D+1) x 1/num_D x lambda
    got = feature_matching_loss(fake, real, n_layers_D=1, num_D=2, lambda_feat=10.0)
    assert float(got) == pytest.approx(2 * 3.0 * 2.0 * 0.5 * 10.0)


def test_feature_matching_stops_gradient_into_real():
    real = jnp.ones((1, 2, 2, 1))
    fake = jnp.zeros((1, 2, 2, 1))
    f = lambda r, x: feature_matching_loss([[x, x]], [[r, r]], n_layers_D=3, num_D=1, lambda_feat=1.0)
    assert float(jnp.abs(jax.grad(f)(real, fake)).sum()) == 0.0
    assert float(jnp.abs(jax.grad(f, argnums=1)(real, fake)).sum()) > 0.0


def test_perceptual_loss_weights_taps_and_takes_the_net_as_argument():
    # A fake "network": tap i is the input times (i + 1); weights 1 and 0.5.
    apply = lambda variables, x: [x * variables["a"], x * variables["b"]]
    variables = {"a": jnp.float32(1.0), "b": jnp.float32(2.0)}
    fake, real = jnp.zeros((2, 4, 4, 3)), jnp.ones((2, 4, 4, 3))
    got = perceptual_loss(apply, variables, fake, real, layer_weights=(1.0, 0.5), lambda_feat=10.0)
    assert float(got) == pytest.approx(10.0 * (1.0 * 1.0 + 0.5 * 2.0))
    grad_real = jax.grad(lambda r: perceptual_loss(apply, variables, fake, r, layer_weights=(1.0, 0.5), lambda_feat=1.0))(real)
    assert float(jnp.abs(grad_real).sum()) == 0.0


# Regions of a 2x4 map: id 7 covers 6 pixels, id 3 covers 2 (the small object).
_REGIONS = jnp.asarray([[[7, 7, 7, 3], [7, 7, 7, 3]]])


def test_region_colour_loss_compares_region_means_and_counts_each_region_once():
    real = jnp.zeros((1, 2, 4, 3))
    # Same means as real in region 7 (+1 / -1 pixels cancel), region 3 off by 0.5 in every channel.
    fake = real.at[0, 0, :3].set(1.0).at[0, 1, :3].set(-1.0).at[0, :, 3].set(0.5)
    # Region means differ by 0 (id 7) and 0.5 (id 3): each region weighs 1/2 whatever its size.
    assert float(region_colour_loss(fake, real, _REGIONS, weight=2.0)) == pytest.approx(2.0 * 0.25)
    assert float(pixel_l1_loss(fake, real, weight=2.0)) == pytest.approx(2.0 * (6 * 1.0 + 2 * 0.5) / 8)
    grad_real = jax.grad(lambda r: region_colour_loss(fake, r, _REGIONS, weight=1.0))(real)
    assert not np.any(np.asarray(grad_real)), "the real photo is a target, not a variable"


def test_feature_colour_loss_anchors_the_first_three_channels_to_region_colour():
    real = jnp.zeros((1, 2, 4, 3)).at[0, :, 3].set(jnp.asarray([0.2, -0.4, 0.6]))
    features = jnp.zeros((1, 2, 4, 5)).at[0, :, 3, :3].set(jnp.asarray([0.2, -0.4, 0.6]))
    features = features.at[..., 3:].set(0.9)  # channels past the third are free
    assert float(feature_colour_loss(features, real, _REGIONS, weight=3.0)) == pytest.approx(0.0, abs=1e-7)
    shifted = features.at[0, :, :3, 0].add(0.3)  # region 7's red channel off by 0.3
    assert float(feature_colour_loss(shifted, real, _REGIONS, weight=3.0)) == pytest.approx(3.0 * 0.1 / 2)
    with pytest.raises(ValueError, match="feat_num >= 3"):
        feature_colour_loss(features[..., :2], real, _REGIONS, weight=1.0)


def test_lattice_loss_counts_only_grid_power_above_the_real_photo():
    from pix2pixhd_jax import losses as L

    rng = np.random.default_rng(0)
    real = jnp.asarray(np.cumsum(rng.normal(size=(2, 32, 64, 3)), axis=2) / 20, jnp.float32)  # smooth-ish
    grid = np.zeros((32, 64, 3), np.float32)
    grid[::8] += 0.1
    grid[:, ::8] += 0.1
    assert float(L.lattice_loss(real, real, period=8, weight=1.0)) == 0.0
    with_grid = float(L.lattice_loss(real + grid, real, period=8, weight=2.0))
    assert with_grid > 0.5
    # Less grid power than the real photo is almost free (only bins where the grid cancels real content count).
    assert float(L.lattice_loss(real, real + grid, period=8, weight=2.0)) < 0.05 * with_grid
    # Its gradient points along the grid, and a small step against it lowers the loss.
    fake = real + grid
    g = jax.grad(lambda f: L.lattice_loss(f, real, period=8, weight=2.0))(fake)
    assert float(jnp.sum(g * grid)) > 0
    assert float(L.lattice_loss(fake - 0.01 * g / jnp.abs(g).max(), real, period=8, weight=2.0)) < with_grid
    with pytest.raises(ValueError, match="lattice_period=8 must divide the image size 30x64"):
        L.lattice_loss(real[:, :30], real[:, :30], period=8, weight=1.0)
