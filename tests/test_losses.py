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

    # Jitted: the loss's FFTs and masks compiled op by op cost seconds; every call here has one shape.
    loss = jax.jit(lambda fake, real, weight: L.lattice_loss(fake, real, period=8, weight=weight))
    rng = np.random.default_rng(0)
    real = jnp.asarray(np.cumsum(rng.normal(size=(2, 32, 64, 3)), axis=2) / 20, jnp.float32)  # smooth-ish
    grid = np.zeros((32, 64, 3), np.float32)
    grid[::8] += 0.1
    grid[:, ::8] += 0.1
    assert float(loss(real, real, 1.0)) == 0.0
    with_grid = float(loss(real + grid, real, 2.0))
    assert with_grid > 0.5
    # Less grid power than the real photo is almost free (only bins where the grid cancels real content count).
    assert float(loss(real, real + grid, 2.0)) < 0.05 * with_grid
    # Its gradient points along the grid, and a small step against it lowers the loss.
    fake = real + grid
    g = jax.jit(jax.grad(loss))(fake, real, 2.0)
    assert float(jnp.sum(g * grid)) > 0
    assert float(loss(fake - 0.01 * g / jnp.abs(g).max(), real, 2.0)) < with_grid
    with pytest.raises(ValueError, match="lattice_period=8 must divide the image size 30x64"):
        L.lattice_loss(real[:, :30], real[:, :30], period=8, weight=1.0)


def _natural_like(shape, seed):
    """Gaussian noise with a 1/f amplitude spectrum (natural-image statistics), std 0.3."""
    rng = np.random.default_rng(seed)
    h, w = shape[1:3]
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None] ** 2)
    f[0, 0] = 1.0
    x = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=shape), axes=(1, 2)) / f[None, :, :, None], axes=(1, 2)))
    return jnp.asarray(0.3 * x / x.std(), jnp.float32)


def _grid(h, w, period=8, strength=0.1):
    grid = np.zeros((h, w, 3), np.float32)
    grid[::period] += strength
    grid[:, ::period] += strength
    return jnp.asarray(grid - grid.mean())


def test_periodic_power_is_the_spectrum_the_lattice_figure_measures():
    from pix2pixhd_jax.evaluation import lattice
    from pix2pixhd_jax.losses import periodic_power

    image = _natural_like((1, 32, 64, 3), 0) + jnp.linspace(-1, 1, 64)[None, None, :, None]  # border jumps too
    want = lattice.power_spectrum(np.asarray(image[0]))
    np.testing.assert_allclose(np.asarray(jax.jit(periodic_power)(image)[0]), want, rtol=1e-3, atol=1e-4 * want.max())


def test_neighbour_lattice_loss_is_the_hinged_log_of_the_lattice_figure():
    """Per image, max(0, log(figure) - log margin), averaged over the 8- and 4-pixel lattices."""
    from pix2pixhd_jax.evaluation import lattice
    from pix2pixhd_jax.losses import lattice_neighbour_loss

    fake = _natural_like((3, 32, 64, 3), 1) + jnp.asarray([0.0, 0.02, 0.1])[:, None, None, None] * _grid(32, 64)[None]
    ratios = [lattice.lattice_ratios(np.asarray(im, np.float64)) for im in fake]
    want = np.mean([[max(0.0, np.log(r[k] / 1.1)) for r in ratios] for k in ("period8", "period4")])
    loss = jax.jit(lambda f: lattice_neighbour_loss(f, period=8, weight=2.0, margin=1.1))
    assert float(loss(fake)) == pytest.approx(2 * want, rel=1e-3)


def test_neighbour_lattice_loss_removes_a_grid_and_leaves_grid_free_images_alone():
    from pix2pixhd_jax.losses import lattice_neighbour_loss

    loss = jax.jit(lambda f: lattice_neighbour_loss(f, period=8, weight=1.0, margin=1.1))
    natural = _natural_like((2, 32, 64, 3), 2)
    fake = natural + _grid(32, 64)[None]
    with_grid = float(loss(fake))
    assert with_grid > 0.5  # the lattice bins hold more than 1.8x their surroundings' power
    assert float(loss(natural)) < 0.02 * with_grid
    # The gradient points along the grid, and a small step against it lowers the penalty.
    g = jax.jit(jax.grad(loss))(fake)
    assert float(jnp.sum(g * _grid(32, 64)[None])) > 0
    assert float(loss(fake - 0.01 * g / jnp.abs(g).max())) < with_grid
    with pytest.raises(ValueError, match="lattice_period=8 must divide the image size 30x64"):
        lattice_neighbour_loss(fake[:, :30], period=8, weight=1.0, margin=1.1)


def test_neighbour_lattice_loss_never_pushes_a_bin_below_its_surroundings():
    """An image whose lattice frequencies are emptied (a notch) scores 0 with a zero gradient."""
    from pix2pixhd_jax.lattice_geometry import lattice_bins
    from pix2pixhd_jax.losses import lattice_neighbour_loss

    spectrum = np.fft.fft2(np.asarray(_natural_like((1, 32, 64, 3), 3)), axes=(1, 2))
    bins = lattice_bins(32, 64, 8)
    spectrum[:, bins[:, 0], bins[:, 1]] *= 0.5  # real images stay real: the bins come in conjugate pairs
    notched = jnp.asarray(np.real(np.fft.ifft2(spectrum, axes=(1, 2))), jnp.float32)
    value, grad = jax.jit(jax.value_and_grad(lambda f: lattice_neighbour_loss(f, period=8, weight=1.0, margin=1.05)))(notched)
    assert float(value) == 0.0 and float(jnp.abs(grad).max()) == 0.0
    # sides='both' pushes a notch back up: positive, and a step against its gradient lowers it.
    both = jax.jit(jax.value_and_grad(lambda f: lattice_neighbour_loss(f, period=8, weight=1.0, margin=1.05, sides="both")))
    value, grad = both(notched)
    assert float(value) > 0.5  # the bins hold a quarter of their surroundings' power: |log 0.25| - log 1.05
    assert float(both(notched - 0.01 * grad / jnp.abs(grad).max())[0]) < float(value)
    with pytest.raises(ValueError, match="lattice_sides='below' is not one of"):
        lattice_neighbour_loss(notched, period=8, weight=1.0, margin=1.05, sides="below")
