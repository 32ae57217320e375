"""Self-attention blocks: identity at init, the attention each form computes, placement in G and D."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from pix2pixhd_jax.configs import tiny_test
from pix2pixhd_jax.models import factory
from pix2pixhd_jax.models.attention import AttentionConfig, SelfAttention, window_attention
from pix2pixhd_jax.models.discriminator import MultiscaleDiscriminator
from pix2pixhd_jax.models.generator import GlobalGenerator

# Values never depend on the init RNG here; 'rbg' initialisers compile faster than threefry's. Blocks
# run jitted: op by op, every op of every shape compiles on its own.
KEY = jax.random.key(1, impl="rbg")
FORMS = [AttentionConfig("full"), AttentionConfig("pooled", pool=2), AttentionConfig("window", window=4)]


def _x(shape=(2, 9, 13, 16), seed=0):
    # Odd sizes, as the D's pad-2 convs produce: pooling and windows must handle ragged edges.
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _with_gate(variables, value):
    params = {**variables["params"], "gate": jnp.float32(value)}
    return {**variables, "params": params}


@pytest.mark.parametrize("cfg", FORMS, ids=lambda c: c.form)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_block_is_exactly_the_identity_at_init(cfg, dtype):
    x = _x().astype(dtype)
    block = SelfAttention(cfg, dtype=dtype)
    variables = jax.jit(block.init)(KEY, x)
    assert float(variables["params"]["gate"]) == 0.0
    apply = jax.jit(block.apply)
    out = apply(variables, x)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(np.asarray(out.astype(jnp.float32)), np.asarray(x.astype(jnp.float32)))
    # A non-zero gate makes it a real (finite) attention layer.
    moved = apply(_with_gate(variables, 0.5), x)
    assert bool(jnp.all(jnp.isfinite(moved.astype(jnp.float32)))) and not bool(jnp.all(moved == x))


@pytest.mark.parametrize("cfg", FORMS, ids=lambda c: c.form)
def test_gradient_reaches_the_gate_at_init(cfg):
    x = _x()
    block = SelfAttention(cfg)
    variables = jax.jit(block.init)(KEY, x)
    target = _x(seed=5)
    grad = jax.jit(jax.grad(lambda v: jnp.sum(block.apply(v, x) * target)))
    grads = grad(variables)["params"]
    assert abs(float(grads["gate"])) > 1e-3
    # Behind a zero gate the projections get no gradient yet: they start learning once the gate moves.
    assert all(float(jnp.abs(g).max()) == 0.0 for k, g in traverse_util.flatten_dict(grads).items() if k[0] != "gate")
    moved = _with_gate(variables, 0.3)
    grads = grad(moved)["params"]
    assert float(jnp.abs(grads["query"]["kernel"]).max()) > 0


def _reference(variables, x, cfg):
    """The block written out with numpy: 1x1 projections, softmax over keys, output projection, gate."""
    p = jax.tree_util.tree_map(np.asarray, variables["params"])
    x = np.asarray(x, np.float64)
    proj = lambda t, name: t @ p[name]["kernel"][0, 0] + p[name]["bias"]
    q, k, v = proj(x, "query"), proj(x, "key"), proj(x, "value")
    b, h, w, _ = x.shape
    if cfg.form == "pooled":  # average over each pool x pool cell, ragged edge cells over what they hold
        s = cfg.pool
        pool = lambda t: np.stack([np.stack([t[:, i:i + s, j:j + s].mean((1, 2)) for j in range(0, w, s)], 1)
                                   for i in range(0, h, s)], 1)
        k, v = pool(k), pool(v)
    out = np.zeros(q.shape[:3] + (v.shape[-1],))
    for yy in range(h):
        for xx in range(w):
            if cfg.form == "window":  # keys of the query's own tile only
                y0, x0 = yy - yy % cfg.window, xx - xx % cfg.window
                kk, vv = k[:, y0:y0 + cfg.window, x0:x0 + cfg.window], v[:, y0:y0 + cfg.window, x0:x0 + cfg.window]
            else:
                kk, vv = k, v
            kk, vv = kk.reshape(b, -1, kk.shape[-1]), vv.reshape(b, -1, vv.shape[-1])
            logits = np.einsum("bd,bmd->bm", q[:, yy, xx], kk)
            weights = np.exp(logits - logits.max(1, keepdims=True))
            weights /= weights.sum(1, keepdims=True)
            out[:, yy, xx] = np.einsum("bm,bmc->bc", weights, vv)
    return x + p["gate"] * proj(out, "out")


@pytest.mark.parametrize("cfg", FORMS, ids=lambda c: c.form)
def test_each_form_computes_softmax_attention_over_its_keys(cfg):
    x = _x((2, 9, 11, 16))
    block = SelfAttention(cfg)
    variables = _with_gate(jax.jit(block.init)(KEY, x), 0.7)
    np.testing.assert_allclose(jax.jit(block.apply)(variables, x), _reference(variables, x, cfg), rtol=1e-4,
                               atol=1e-4)


def test_window_attention_is_local_and_covering_windows_equal_full():
    q, k, v = (_x((1, 10, 12, 4), seed=s) for s in (1, 2, 3))
    attend = jax.jit(window_attention, static_argnums=3)
    out = attend(q, k, v, 4)
    # Changing the keys/values of one tile leaves every other tile's output untouched.
    k2 = k.at[:, 0:4, 0:4].add(3.0)
    v2 = v.at[:, 0:4, 0:4].add(3.0)
    out2 = attend(q, k2, v2, 4)
    np.testing.assert_array_equal(out2[:, 4:], out[:, 4:])
    np.testing.assert_array_equal(out2[:, :, 4:], out[:, :, 4:])
    assert not np.allclose(out2[:, :4, :4], out[:, :4, :4])
    # One window covering the (padded) map is full attention: the padding is masked out.
    full = SelfAttention(AttentionConfig("full"))
    win = SelfAttention(AttentionConfig("window", window=16))
    x = _x((1, 10, 12, 16))
    variables = _with_gate(jax.jit(full.init)(KEY, x), 1.0)
    np.testing.assert_allclose(jax.jit(win.apply)(variables, x), jax.jit(full.apply)(variables, x), rtol=1e-5,
                               atol=1e-5)


def _flat(tree):
    return traverse_util.flatten_dict(jax.device_get(tree))


def test_discriminator_attention_at_the_chosen_scale_and_layer_leaves_the_rest_unchanged():
    # Shapes only (eval_shape): values with attention at init are compared in test_recipe's neutral step.
    x = jax.ShapeDtypeStruct((1, 16, 24, 5), jnp.float32)
    plain = MultiscaleDiscriminator(4, 2, 2)
    attn = plain.clone(attention=AttentionConfig("pooled", pool=2), attention_scales=(0,), attention_after_layer=1)
    p_plain = _flat(jax.eval_shape(plain.init, jax.random.PRNGKey(0), x)["params"])
    p_attn = _flat(jax.eval_shape(attn.init, jax.random.PRNGKey(0), x)["params"])
    extra = {k for k in p_attn if k not in p_plain}
    # The finest input (position 0) is scale1 in the official naming (scale0 is the coarsest).
    assert {k[:2] for k in extra} == {("scale1", "attn")}
    assert all(p_attn[k].shape == v.shape for k, v in p_plain.items())
    assert p_attn[("scale1", "attn", "out", "kernel")].shape == (1, 1, 4, 8)  # after layer 1: 8 channels
    assert p_attn[("scale1", "attn", "query", "kernel")].shape == (1, 1, 8, 1)  # C / 8
    assert p_attn[("scale1", "attn", "value", "kernel")].shape == (1, 1, 8, 4)  # C / 2
    with pytest.raises(ValueError, match="d_attention_scales"):
        jax.eval_shape(plain.clone(attention=AttentionConfig(), attention_scales=(2,)).init, jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="d_attention_after_layer"):
        jax.eval_shape(plain.clone(attention=AttentionConfig(), attention_scales=(0,), attention_after_layer=3).init,
                       jax.random.PRNGKey(0), x)


def test_generator_bottleneck_attention_with_batch_norm_and_bf16():
    x = _x((1, 8, 8, 5))
    plain = GlobalGenerator(3, 4, 1, 2, norm="batch")
    attn = plain.clone(attention=AttentionConfig("window", window=2), attention_after_block=0)
    v_attn = jax.jit(attn.init)(KEY, x)  # jitted: an eager G compiles op by op
    p_plain = _flat(jax.eval_shape(plain.init, jax.random.PRNGKey(0), x)["params"])
    assert {k[0] for k in set(_flat(v_attn["params"])) - set(p_plain)} == {"attn"}
    # Without the attention arrays the same variables drive the plain generator to the same output.
    v_plain = {c: {k: v for k, v in tree.items() if k != "attn"} for c, tree in v_attn.items()}
    np.testing.assert_array_equal(jax.jit(plain.apply)(v_plain, x), jax.jit(attn.apply)(v_attn, x))
    bf16 = attn.clone(dtype=jnp.bfloat16)
    out, _ = jax.jit(lambda v: bf16.apply(v, x, True, mutable=["batch_stats"]))(_with_gate(v_attn, 0.5))
    assert out.shape == (1, 8, 8, 3) and bool(jnp.all(jnp.isfinite(out)))
    with pytest.raises(ValueError, match="g_attention_after_block"):
        jax.eval_shape(plain.clone(attention=AttentionConfig(), attention_after_block=2).init, jax.random.PRNGKey(0), x)


def test_factory_keys_default_off_and_place_blocks():
    config = tiny_test.get_config()
    d = factory.make_discriminator(config.model, config.loss)
    g = factory.make_generator(config.model)
    assert d.attention is None and g.attention is None
    m = config.model
    m.d_attention_scales, m.d_attention_after_layer, m.g_attention = (1,), 0, True
    m.attention_form, m.attention_pool, m.attention_window = "window", 3, 5
    d = factory.make_discriminator(m, config.loss)
    g = factory.make_generator(m)
    assert d.attention == g.attention == AttentionConfig("window", pool=3, window=5, reduction=8)
    assert d.attention_scales == (1,) and d.attention_after_layer == 0 and g.attention_after_block == -1
    m.attention_form = "flash"
    with pytest.raises(ValueError, match="attention_form"):
        factory.make_generator(m)
