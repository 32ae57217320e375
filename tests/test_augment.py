"""DiffAugment: one transform per sample, identical on label, real and fake; geometry in step."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from pix2pixhd_jax import augment

B, H, W, NC = 3, 16, 24, 5


def _cfg(policy="color,translation,cutout", **kw):
    cfg = ml_collections.ConfigDict(dict(policy=policy, p_color=1.0, p_translation=1.0, p_cutout=1.0,
                                         translation_ratio=0.25, cutout_ratio=0.5, cutout_label=False))
    cfg.update(kw)
    return augment.AugmentOptions.from_config(cfg)


def _scene(seed=0):
    """One-hot labels of random blocks and an image that is a fixed colour per class (never 0)."""
    rng = np.random.default_rng(seed)
    label = np.repeat(np.repeat(rng.integers(0, NC, (B, H // 4, W // 4)), 4, 1), 4, 2)
    onehot = jax.nn.one_hot(label, NC)
    palette = rng.uniform(0.2, 0.9, (NC, 3)) * rng.choice([-1, 1], (NC, 3))
    return onehot, jnp.asarray(palette[label], jnp.float32), palette


def test_translation_keeps_label_and_image_aligned_pixel_for_pixel():
    onehot, image, palette = _scene()
    cfg = _cfg("translation")
    params = augment.sample_params(jax.random.PRNGKey(3), B, H, W, cfg)
    assert np.any(np.asarray(params["shift_y"]) != 0) and np.any(np.asarray(params["shift_x"]) != 0)
    lab = np.asarray(augment.apply(onehot, params, cfg, is_label=True))
    img = np.asarray(augment.apply(image, params, cfg, is_label=False))
    has_class = lab.sum(-1) == 1
    # Inside: the image is still the colour of the (shifted) label's class; outside: both are zero.
    np.testing.assert_allclose(img[has_class], palette[lab[has_class].argmax(-1)], rtol=1e-6)
    assert np.all(lab[~has_class] == 0) and np.all(img[~has_class] == 0)
    # And the shift is the sampled one: out[y, x] = in[y - dy, x - dx].
    for b in range(B):
        dy, dx = int(params["shift_y"][b]), int(params["shift_x"][b])
        ys, xs = slice(max(dy, 0), H + min(dy, 0)), slice(max(dx, 0), W + min(dx, 0))
        src = (slice(max(-dy, 0), H + min(-dy, 0)), slice(max(-dx, 0), W + min(-dx, 0)))
        np.testing.assert_array_equal(lab[b, ys, xs], np.asarray(onehot)[b][src])
        assert has_class[b].sum() == (H - abs(dy)) * (W - abs(dx))


def test_real_and_fake_get_the_same_transform():
    onehot, real, _ = _scene()
    fake = real + 0.05 * jax.random.normal(jax.random.PRNGKey(1), real.shape)
    cfg = _cfg()
    params = augment.sample_params(jax.random.PRNGKey(7), B, H, W, cfg)
    aug_real, aug_fake = (np.asarray(augment.apply(x, params, cfg, is_label=False)) for x in (real, fake))
    # Identical inputs give identical outputs, different from the input (the transform did something).
    np.testing.assert_array_equal(np.asarray(augment.apply(real, params, cfg, is_label=False)), aug_real)
    assert not np.allclose(aug_real, np.asarray(real))
    # The geometry is shared: the translated-in border and the cutout hole are the same pixels in both.
    zero_real, zero_fake = np.all(aug_real == 0, -1), np.all(aug_fake == 0, -1)
    np.testing.assert_array_equal(zero_real, zero_fake)
    assert zero_real.any()
    mask = augment.cutout_mask(params, H, W)
    assert float(mask.min()) == 0.0 and float(mask.max()) == 1.0
    # The conditioning is translated but not cut out by default, and cut out with cutout_label=True.
    lab = np.asarray(augment.apply(onehot, params, cfg, is_label=True))
    lab_cut = np.asarray(augment.apply(onehot, params, _cfg(cutout_label=True), is_label=True))
    hole = np.asarray(mask[..., 0] == 0)
    assert lab[hole].sum() > 0 and lab_cut[hole].sum() == 0
    np.testing.assert_array_equal(lab[~hole], lab_cut[~hole])


def test_colour_ops_on_hand_values():
    x = jnp.asarray([[[[0.1, 0.2, 0.6]], [[-0.3, 0.0, 0.3]]]])  # (1, 2, 1, 3)
    p = {"brightness": jnp.asarray([0.25]), "saturation": jnp.asarray([2.0]), "contrast": jnp.asarray([0.5])}
    y = np.asarray(augment.color(x, p))
    v = np.asarray(x) + 0.25
    v = (v - v.mean(-1, keepdims=True)) * 2.0 + v.mean(-1, keepdims=True)
    v = (v - v.mean()) * 0.5 + v.mean()
    np.testing.assert_allclose(y, v, rtol=1e-6, atol=1e-7)


def test_probabilities_zero_leave_inputs_unchanged_and_grads_flow():
    onehot, real, _ = _scene()
    cfg = _cfg(p_color=0.0, p_translation=0.0, p_cutout=0.0)
    params = augment.sample_params(jax.random.PRNGKey(0), B, H, W, cfg)
    np.testing.assert_allclose(augment.apply(real, params, cfg, is_label=False), real, atol=1e-6)
    np.testing.assert_array_equal(augment.apply(onehot, params, cfg, is_label=True), onehot)
    cfg = _cfg()
    params = augment.sample_params(jax.random.PRNGKey(0), B, H, W, cfg)
    grad = jax.grad(lambda x: jnp.sum(augment.apply(x, params, cfg, is_label=False) ** 2))(real)
    assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0  # differentiable for G


def test_policy_is_checked():
    assert augment.parse_policy(" color , cutout") == ("color", "cutout") and augment.parse_policy("") == ()
    assert not _cfg("").enabled
    with pytest.raises(ValueError, match="unknown ops"):
        augment.parse_policy("color,flip")
