"""Layer semantics against explicit PyTorch formulas: transposed conv, pyramid pooling, norms.

The conv rewrites against plain lax convs are in test_conv_rewrites.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pix2pixhd_jax.models.layers import ConvTranspose, Norm, avg_pool_3x3_s2, reflect_pad


def _conv_transpose_by_formula(x, w, b):
    """ConvTranspose2d(k3, s2, p1, op1): out[y, x] += in[i, j] * w[ky, kx] with y = 2i - 1 + ky."""
    n, h, wd, cin = x.shape
    cout = w.shape[-1]
    out = np.zeros((n, 2 * h, 2 * wd, cout)) + b
    for i in range(h):
        for j in range(wd):
            for ky in range(3):
                for kx in range(3):
                    y, xx = 2 * i - 1 + ky, 2 * j - 1 + kx
                    if 0 <= y < 2 * h and 0 <= xx < 2 * wd:
                        out[:, y, xx] += x[:, i, j] @ w[ky, kx]
    return out


@pytest.mark.parametrize("impl, conv_impl", [("tapwise", "auto"), ("subpixel", "auto"), ("xla", "auto"),
                                             ("tapwise", "lax")])
def test_conv_transpose_exactly_doubles_with_pytorch_taps(impl, conv_impl):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
    layer = ConvTranspose(6, impl=impl, conv_impl=conv_impl)
    variables = layer.init(jax.random.PRNGKey(0), x)
    w = np.asarray(variables["params"]["kernel"])
    b = np.asarray(variables["params"]["bias"])
    out = np.asarray(layer.apply(variables, x))
    assert out.shape == (2, 6, 10, 6)
    np.testing.assert_allclose(out, _conv_transpose_by_formula(x, w, b), atol=1e-4)


def test_conv_transpose_gradients_agree_between_impls():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 4, 4, 3)).astype(np.float32))
    variables = ConvTranspose(2).init(jax.random.PRNGKey(1), x)
    grads = [jax.grad(lambda v: jnp.sum(ConvTranspose(2, impl=impl).apply(v, x) ** 2))(variables)
             for impl in ("tapwise", "subpixel", "xla")]
    for rewritten in grads[:2]:
        for a, b in zip(jax.tree_util.tree_leaves(rewritten), jax.tree_util.tree_leaves(grads[-1])):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_pyramid_pool_excludes_padding_from_the_count():
    x = np.arange(5 * 7, dtype=np.float32).reshape(1, 5, 7, 1)
    out = np.asarray(avg_pool_3x3_s2(jnp.asarray(x)))
    assert out.shape == (1, 3, 4, 1)  # ceil(H/2), ceil(W/2)
    for oy in range(3):
        for ox in range(4):
            ys = range(max(0, 2 * oy - 1), min(5, 2 * oy + 2))
            xs = range(max(0, 2 * ox - 1), min(7, 2 * ox + 2))
            want = np.mean([x[0, y, xx, 0] for y in ys for xx in xs])
            assert abs(out[0, oy, ox, 0] - want) < 1e-5


def test_reflect_pad_mirrors_without_repeating_the_edge():
    x = jnp.arange(4.0).reshape(1, 1, 4, 1)
    row = np.asarray(reflect_pad(x, 2))[0, 2, :, 0]
    np.testing.assert_array_equal(row, [2, 1, 0, 1, 2, 3, 2, 1])


def test_instance_norm_is_per_sample_per_channel_biased():
    x = np.random.default_rng(2).normal(3, 2, size=(2, 6, 5, 4)).astype(np.float32)
    y = np.asarray(Norm("instance").apply({}, x))
    mean, var = x.mean((1, 2), keepdims=True), x.var((1, 2), keepdims=True)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), atol=1e-5)


def test_batch_norm_keeps_running_stats_in_a_mutable_collection():
    x = np.random.default_rng(3).normal(2, 1, size=(4, 3, 3, 2)).astype(np.float32)
    norm = Norm("batch")
    variables = norm.init(jax.random.PRNGKey(0), x)
    assert "batch_stats" in variables
    _, updated = norm.apply(variables, x, train=True, mutable=["batch_stats"])
    mean = np.asarray(updated["batch_stats"]["BatchNorm_0"]["mean"])
    np.testing.assert_allclose(mean, 0.1 * x.mean((0, 1, 2)), atol=1e-5)  # PyTorch momentum 0.1
