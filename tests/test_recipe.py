"""pix2pixHD++ pieces: EMA, hinge, R1, spectral-norm state through checkpoints, the all-options step."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from pix2pixhd_jax.configs import pix2pixhd_pp, synthetic_demo, tiny_test
from pix2pixhd_jax import augment, checkpointing, losses
from pix2pixhd_jax.optim import make_optimizers
from pix2pixhd_jax.state import GANState, ema_decay_at, ema_update, inference_params
from pix2pixhd_jax.models.factory import build as make_networks, label_encoding
from pix2pixhd_jax.train_step import make_init_fn, make_train_step

H, W = 16, 24
# Tests below compare runs with each other, never with fixed numbers. Compilation is most of their
# time, so: the 'rbg' PRNG (its initialisers compile several times faster than threefry's), no
# perceptual loss (not an option under test), one D scale and one G downsampling.
KEY = jax.random.key(0, impl="rbg")


def _batch(seed=0, n=2, label_nc=6):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, label_nc, (n, H, W)).astype(np.int32)
    inst = (label * 1000 + rng.integers(0, 2, (n, H, W))).astype(np.int32)
    return jax.tree_util.tree_map(jnp.asarray, {"label": label, "inst": inst,
                                                "image": rng.uniform(-1, 1, (n, H, W, 3)).astype(np.float32)})


def _setup(config):
    config.loss.no_vgg_loss = True
    config.model.num_D, config.model.n_downsample_global = 1, 1
    nets = make_networks(config)
    tx_g, tx_d = make_optimizers(config.optim)
    init = make_init_fn(config, nets, tx_g, tx_d, height=H, width=W)
    step = make_train_step(config, nets, tx_g, tx_d, steps_per_epoch=100)
    return nets, init, jax.jit(step), None


def _flat(tree):
    return traverse_util.flatten_dict(jax.device_get(tree))


# ------------------------------------------------------------------------------------ hand values
def test_ema_update_exact_on_hand_values():
    ema = {"a": jnp.asarray([4.0, -2.0]), "b": {"c": jnp.asarray(1.0)}}
    params = {"a": jnp.asarray([8.0, 2.0]), "b": {"c": jnp.asarray(3.0)}}
    out = ema_update(ema, params, jnp.float32(0.75))
    np.testing.assert_array_equal(out["a"], [5.0, -1.0])
    assert float(out["b"]["c"]) == 1.5
    assert float(ema_decay_at(jnp.int32(0), 0.999, True)) == pytest.approx(0.1)
    assert float(ema_decay_at(jnp.int32(90), 0.999, True)) == pytest.approx(0.91)
    assert float(ema_decay_at(jnp.int32(10**6), 0.999, True)) == pytest.approx(0.999)
    assert float(ema_decay_at(jnp.int32(0), 0.999, False)) == pytest.approx(0.999)


def test_hinge_on_hand_inputs():
    feat = jnp.zeros((1, 2, 2, 4))
    s1 = jnp.asarray([-2.0, 0.5, 1.5, 0.0]).reshape(1, 2, 2, 1)
    s2 = jnp.asarray([3.0, -0.5]).reshape(1, 1, 2, 1)
    out = [[feat, s1], [feat, s2]]
    # real: mean relu(1 - s) = (3 + .5 + 0 + 1)/4 + (0 + 1.5)/2; fake: mean relu(1 + s) = (0 + 1.5 + 2.5 + 1)/4 + (4 + .5)/2
    assert float(losses.gan_loss(out, target_is_real=True, loss_type="hinge")) == pytest.approx(1.125 + 0.75)
    assert float(losses.gan_loss(out, target_is_real=False, loss_type="hinge")) == pytest.approx(1.25 + 2.25)
    assert float(losses.gan_loss(out, target_is_real=True, loss_type="hinge", for_discriminator=False)) == \
        pytest.approx(0.0 - 1.25)  # G: -mean s per scale
    assert float(losses.discriminator_loss(out, out, loss_type="hinge")) == pytest.approx(0.5 * (3.5 + 1.875))


def test_r1_on_hand_inputs():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4, 3))
    w = jnp.asarray([0.5, -1.0, 2.0])
    linear = lambda img: [[img @ w[:, None]]]  # one scale of 3x4 patch scores
    # d mean_p(x . w) / dx = w / (H W) at every pixel -> ||g||^2 = |w|^2 / (H W) for every sample.
    assert float(losses.r1_penalty(linear, x, gamma=10.0)) == pytest.approx(5.0 * 5.25 / 12, rel=1e-6)
    two_scales = lambda img: [[img @ w[:, None]], [jnp.sum(img ** 2, -1, keepdims=True)]]
    g = (np.asarray(w) + 2 * np.asarray(x)) / 12
    want = 0.5 * 3.0 * np.mean(np.sum(g ** 2, axis=(1, 2, 3)))
    assert float(losses.r1_penalty(two_scales, x, gamma=3.0)) == pytest.approx(want, rel=1e-5)


def test_recipe_config_sets_each_piece():
    c = pix2pixhd_pp.get_config()
    base = synthetic_demo.get_config()
    assert (c.loss.gan_mode, c.model.spectral_norm_D, c.model.spectral_norm_G) == ("hinge", True, False)
    assert (c.optim.lr_G, c.optim.lr_D, c.optim.beta1_G, c.optim.beta1_D, c.optim.beta2_G, c.optim.beta2_D) == \
        (1e-4, 4e-4, 0.0, 0.0, 0.9, 0.9)
    assert c.optim.ema_decay == 0.999 and c.loss.r1_gamma == 0 and c.augment.policy == ""
    assert c.model.d_attention_scales == () and not c.model.g_attention
    assert not c.model.noise_inputs and c.loss.lambda_lattice == 0 and base.model.noise_inputs  # official networks
    assert c.model.ngf == base.model.ngf and c.data.synthetic_width == base.data.synthetic_width
    full = pix2pixhd_pp.get_config("r1,attn,gattn,sn_g,aug")
    assert full.loss.r1_gamma > 0 and full.model.d_attention_scales == (0,) and full.model.g_attention
    assert full.model.spectral_norm_G and augment.parse_policy(full.augment.policy) == augment.OPS
    with pytest.raises(ValueError, match="unknown extras"):
        pix2pixhd_pp.get_config("attention")


# ------------------------------------------------------------------------------ all options on
@pytest.fixture(scope="module")
def all_on():
    """Three steps of the tiny model with every option on (EMA without warm-up, R1 every 2 steps)."""
    config = pix2pixhd_pp.apply_recipe(tiny_test.get_config(), pix2pixhd_pp.EXTRAS)
    config.model.attention_form, config.model.attention_pool = "pooled", 2
    config.optim.ema_decay, config.optim.ema_warmup = 0.9, False
    config.loss.r1_every = 2
    # The lattice penalty referenced to the fake's own neighbours, both sides (off in every recipe).
    config.loss.lambda_lattice, config.loss.lattice_reference, config.loss.lattice_sides = 1.0, "neighbours", "both"
    config.model.noise_inputs = True  # G's per-pixel noise (off in every recipe)
    nets, init, step, vgg_vars = _setup(config)
    states, metrics = [jax.jit(init)(KEY)], []
    for i in range(3):
        state, m = step(states[-1], _batch(i), vgg_vars)
        states.append(state)
        metrics.append({k: float(v) for k, v in m.items()})
    return config, nets, init, states, metrics


def test_every_option_on_gives_finite_losses(all_on):
    config, _, _, states, metrics = all_on
    for m in metrics:
        assert all(np.isfinite(v) for v in m.values()), m
        assert m["G_lattice"] >= 0.0
    # Lazy R1 ran on the 2nd step only (steps ending at multiples of r1_every).
    assert metrics[0]["D_R1"] == 0.0 and metrics[1]["D_R1"] > 0.0 and metrics[2]["D_R1"] == 0.0
    assert "attn" in states[0].d_params["scale0"] and "attn" in states[0].g_params["generator"]
    assert inference_params(states[-1]) is states[-1].g_ema
    # The noise scales start at 0 and training moves them: the noise reaches the loss.
    scales = {k: v for k, v in _flat(states[0].g_params).items() if "noise" in k}
    assert scales and all(not np.any(v) for v in scales.values())
    assert all(np.any(_flat(states[-1].g_params)[k]) for k in scales)


def test_lazy_r1_value_is_the_penalty_of_the_augmented_real_input(all_on):
    config, nets, _, states, metrics = all_on
    state, batch = states[1], _batch(1)
    aug = augment.AugmentOptions.from_config(config.augment)
    params = augment.sample_params(jax.random.fold_in(jax.random.PRNGKey(config.seed), 1), 2, H, W, aug)
    d_label = augment.apply(label_encoding(batch, config.model), params, aug, is_label=True)
    d_real = augment.apply(batch["image"], params, aug, is_label=False)
    d = lambda img: nets.discriminator.apply({"params": state.d_params, **state.d_collections},
                                             jnp.concatenate([d_label, img], -1), True, mutable=["batch_stats"])[0]
    want = jax.jit(lambda real: losses.r1_penalty(d, real, gamma=config.loss.r1_gamma))(d_real)
    assert metrics[1]["D_R1"] == pytest.approx(float(want), rel=1e-4)


def test_ema_after_k_steps_equals_the_closed_form(all_on):
    config, _, _, states, _ = all_on
    d, k = config.optim.ema_decay, len(states) - 1
    # ema_k = d^k p_0 + (1 - d) sum_i d^(k-i) p_i: the average starts at the initial params.
    params = [_flat(s.g_params) for s in states]
    got = _flat(states[-1].g_ema)
    for key in params[0]:
        want = d ** k * params[0][key] + (1 - d) * sum(d ** (k - i) * params[i][key] for i in range(1, k + 1))
        np.testing.assert_allclose(got[key], want, rtol=1e-5, atol=1e-7)
    assert any(not np.array_equal(got[key], params[-1][key]) for key in got)


def test_spectral_norm_vectors_and_ema_live_in_the_state_and_survive_a_checkpoint(all_on, tmp_path):
    config, _, init, states, _ = all_on
    state = states[-1]
    u0, u3 = _flat(states[0].d_collections), _flat(state.d_collections)
    assert {k[-1] for k in u3} == {"spectral_u"} and any("attn" in k for k in u3)
    assert any(k[-1] == "spectral_u" for k in _flat(state.g_collections))
    assert any(not np.array_equal(u0[k], u3[k]) for k in u3)  # the power iteration moved them
    manager = checkpointing.make_manager(str(tmp_path), max_to_keep=1, async_save=False)
    checkpointing.save(manager, 3, state, config)
    abstract = jax.eval_shape(init, KEY)
    single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = checkpointing.abstract_with_sharding(abstract, jax.tree_util.tree_map(lambda _: single, abstract))
    restored, step = checkpointing.restore(manager, target)
    assert step == 3 and int(restored.step) == 3
    want, got = jax.tree_util.tree_leaves_with_path(jax.device_get(state)), jax.tree_util.tree_leaves(restored)
    assert len(want) == len(got)
    for (path, a), b in zip(want, got):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    # Inference (and hence export and feature banks) loads G's moving average, not the raw weights.
    from pix2pixhd_jax.inference import Synthesizer

    synth = Synthesizer.from_workdir(str(tmp_path), load_bank=False)
    for a, b in zip(jax.tree_util.tree_leaves(synth.g_params), jax.tree_util.tree_leaves(jax.device_get(state.g_ema))):
        np.testing.assert_array_equal(a, b)
    # A checkpoint written before GANState had g_ema (no such key) still restores into a run without EMA.
    legacy = {f.name: getattr(state, f.name) for f in dataclasses.fields(state) if f.name != "g_ema"}
    checkpointing.save(manager, 4, legacy, config)
    old, _ = checkpointing.restore(manager, target.replace(g_ema=None), step=4)
    assert isinstance(old, GANState) and old.g_ema is None
    np.testing.assert_array_equal(jax.tree_util.tree_leaves(old.d_collections)[0],
                                  jax.tree_util.tree_leaves(state.d_collections)[0])
    manager.close()


# ------------------------------------------------------------------------------ options neutralised
def test_neutral_options_give_the_official_step():
    """Attention at init (gate 0), augmentation with probability 0 and EMA change nothing the official
    step computes: same losses, same updates of every official parameter."""
    base = tiny_test.get_config()
    base.optim.eps = 1e-3  # keep Adam smooth in the gradient (see test_train_step._run)
    neutral = tiny_test.get_config()
    neutral.optim.eps = 1e-3
    m = neutral.model
    m.d_attention_scales, m.g_attention, m.attention_form = (0,), True, "window"
    neutral.augment.policy = "translation,cutout"
    neutral.augment.p_translation = neutral.augment.p_cutout = 0.0
    neutral.optim.ema_decay = 0.99
    batch = _batch(3)
    results = []
    for config in (base, neutral):
        _, init, step, vgg_vars = _setup(config)
        state = jax.jit(init)(KEY)
        new, metrics = step(state, batch, vgg_vars)
        results.append((state, new, {k: float(v) for k, v in metrics.items()}))
    (s_base, n_base, m_base), (s_neu, n_neu, m_neu) = results
    for k in ("loss_G", "loss_D", "G_GAN", "G_GAN_Feat", "D_fake", "D_real"):
        assert m_neu[k] == pytest.approx(m_base[k], rel=1e-6), k
    for side in ("g_params", "d_params"):
        before_b, before_n = _flat(getattr(s_base, side)), _flat(getattr(s_neu, side))
        after_b, after_n = _flat(getattr(n_base, side)), _flat(getattr(n_neu, side))
        assert set(before_b) < set(before_n)  # the attention arrays are extra, nothing else changed
        for key in before_b:
            np.testing.assert_array_equal(before_b[key], before_n[key])
            np.testing.assert_allclose(after_n[key], after_b[key], rtol=0, atol=1e-6, err_msg=str(key))
    assert n_base.g_ema is None and n_neu.g_ema is not None
