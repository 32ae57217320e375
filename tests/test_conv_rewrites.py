"""The CPU conv rewrites equal the plain lax convs (values and gradients), and conv_impl selects them."""
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pix2pixhd_jax.models import GlobalGenerator, MultiscaleDiscriminator
from pix2pixhd_jax.models import conv_rewrites as cr
from pix2pixhd_jax.models.attention import AttentionConfig


def _normal(seed: int, shape: tuple) -> jax.Array:
    """float32 N(0, 1) from numpy: an eager jax.random call compiles per shape (~1 s each on CPU)."""
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def _assert_close(got: jax.Array, want: jax.Array) -> None:
    """float32 agreement up to summation order, relative to the tensor's scale."""
    scale = float(jnp.max(jnp.abs(want))) or 1.0
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5 * scale)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _values_and_grads(rewrite: Callable, plain: Callable, x: jax.Array, kernel: jax.Array, dy: jax.Array):
    """Both forms' outputs and their (dx, dkernel) for one shared cotangent, in one compile."""
    y_r, vjp_r = jax.vjp(rewrite, x, kernel)
    y_p, vjp_p = jax.vjp(plain, x, kernel)
    return (y_r, *vjp_r(dy)), (y_p, *vjp_p(dy))


def _check_rewrite(rewrite: Callable, plain: Callable, x_shape: tuple, k_shape: tuple) -> None:
    """Forward, input gradient and kernel gradient of `rewrite` equal those of `plain`."""
    x, kernel = _normal(0, x_shape), _normal(1, k_shape)
    dy = _normal(2, jax.eval_shape(plain, x, kernel).shape)
    got, want = _values_and_grads(rewrite, plain, x, kernel, dy)
    assert got[0].shape == want[0].shape
    for g, w in zip(got, want):
        _assert_close(g, w)


@pytest.mark.parametrize("h, w", [(16, 16), (17, 23), (5, 6)])
@pytest.mark.parametrize("kernel", [4, 2])
def test_space_to_depth_conv_equals_strided_lax_conv(h, w, kernel):
    rewrite = lambda x, k: cr.space_to_depth_conv(x, k, 2)
    plain = lambda x, k: cr.lax_conv(x, k, 2, 2)
    _check_rewrite(rewrite, plain, (2, h, w, 3), (kernel, kernel, 3, 5))


@pytest.mark.parametrize("h, w", [(16, 16), (9, 7)])
@pytest.mark.parametrize("kernel", [4, 6])
def test_shift_stacked_conv_equals_lax_conv(h, w, kernel):
    rewrite = lambda x, k: cr.shift_stacked_conv(x, k, 2)
    plain = lambda x, k: cr.lax_conv(x, k, 1, 2)
    _check_rewrite(rewrite, plain, (2, h, w, 3), (kernel, kernel, 3, 5))


# (B, H, W, Cin, Cout, k): the first takes the GEMM input gradient (Cout > B*Ho*Wo), the others lax's.
@pytest.mark.parametrize("b, h, w, ci, co, k", [(2, 4, 5, 6, 48, 3), (1, 9, 11, 5, 7, 2), (1, 10, 12, 8, 4, 7)])
def test_conv_valid_equals_lax_valid_conv(b, h, w, ci, co, k):
    _check_rewrite(cr.conv_valid, lambda x, kk: cr.lax_conv(x, kk, 1, 0), (b, h, w, ci), (k, k, ci, co))


@pytest.mark.parametrize("b, h, w, ci, co, k", [(1, 13, 15, 6, 3, 7), (2, 6, 9, 8, 1, 4), (1, 5, 4, 3, 4, 1)])
def test_narrow_output_conv_equals_lax_valid_conv(b, h, w, ci, co, k):
    _check_rewrite(cr.narrow_output_conv, lambda x, kk: cr.lax_conv(x, kk, 1, 0), (b, h, w, ci), (k, k, ci, co))


@pytest.mark.parametrize("h, w", [(4, 4), (3, 5)])
def test_subpixel_transposed_conv_equals_lax_conv_transpose(h, w):
    _check_rewrite(cr.subpixel_transposed_conv, cr.lax_conv_transpose, (2, h, w, 3), (3, 3, 3, 4))


def test_conv2d_dispatches_every_rewrite_and_lax_is_plain():
    """conv2d under 'rewrite' equals 'lax' for each dispatched shape; 'lax' traces to plain convs only."""
    # (kernel, stride, padding, out channels, input size): space-to-depth, shift-stacked, conv_valid,
    # lax (odd map), patches (even map), 1x1, and the narrow-output form (RGB out, 1-channel logits).
    cases = [(4, 2, 2, 5, 9), (4, 1, 2, 5, 9), (3, 1, 0, 5, 9), (3, 2, 1, 5, 9), (3, 2, 1, 5, 10), (1, 1, 0, 5, 9),
             (7, 1, 0, 3, 9), (4, 1, 2, 1, 9)]
    for k, s, p, c_out, size in cases:
        x = _normal(0, (1, size, size + 2, 3))
        kernel = _normal(k + s, (k, k, 3, c_out))
        both = jax.jit(lambda a, b: [cr.conv2d(a, b, s, p, impl) for impl in ("rewrite", "lax")])
        _assert_close(*both(x, kernel))
        jaxpr = str(jax.make_jaxpr(lambda a, b: cr.conv2d(a, b, s, p, "lax"))(x, kernel))
        assert "custom_vjp" not in jaxpr and jaxpr.count("conv_general_dilated") == 1


def test_use_rewrites_resolves_per_backend_and_rejects_unknown_values():
    assert jax.default_backend() == "cpu"
    assert cr.use_rewrites("auto") and cr.use_rewrites("rewrite") and not cr.use_rewrites("lax")
    with pytest.raises(ValueError, match=r"'gpu'.*\('auto', 'rewrite', 'lax'\)"):
        cr.use_rewrites("gpu")


def test_upsample_impl_picks_the_transposed_form_only_where_rewrites_run():
    assert cr.upsample_form("tapwise", "auto") == "tapwise"  # CPU
    assert cr.upsample_form("tapwise", "lax") == "xla"
    assert cr.upsample_form("subpixel", "rewrite") == "subpixel"
    assert cr.upsample_form("subpixel", "auto") == "subpixel"  # CPU
    assert cr.upsample_form("subpixel", "lax") == "xla"
    assert cr.upsample_form("xla", "rewrite") == "xla"
    with pytest.raises(ValueError, match="subpixel"):
        cr.upsample_form("nearest", "auto")


def test_barrier_only_with_rewrites():
    x = jnp.ones((1, 2, 2, 1))
    count = lambda impl: str(jax.make_jaxpr(lambda a: cr.unfused(a, impl))(x)).count("optimization_barrier")
    assert (count("rewrite"), count("auto"), count("lax")) == (1, 1, 0)


def _same_outputs_and_param_grads(make: Callable, x: jax.Array) -> None:
    """make(conv_impl) -> module: 'lax' and 'rewrite' share one param tree, outputs and param grads."""
    lax_net, rewrite_net = make("lax"), make("rewrite")
    shapes = lambda net: jax.eval_shape(net.init, jax.random.PRNGKey(0), x)
    assert shapes(lax_net) == shapes(rewrite_net)
    # Fan-in scaled random params of the init's shapes (a jitted flax init compiles for seconds on
    # CPU; unit-variance activations keep the tanh unsaturated); a nonzero attention gate also puts
    # the attention branch into the outputs.
    leaves, tree = jax.tree_util.tree_flatten(shapes(rewrite_net))
    fan_in = lambda shape: max(1, math.prod(shape[:-1]))
    variables = jax.tree_util.tree_unflatten(
        tree, [_normal(i, leaf.shape) / math.sqrt(fan_in(leaf.shape)) for i, leaf in enumerate(leaves)])

    @functools.partial(jax.jit, static_argnums=0)
    def value_and_grad(net, params):
        outputs = lambda p: net.apply({**variables, "params": p}, x)
        loss = lambda p: sum(jnp.sum(jnp.square(o)) for o in jax.tree_util.tree_leaves(outputs(p)))
        return jax.value_and_grad(loss)(params), outputs(params)

    (loss_l, grads_l), out_l = value_and_grad(lax_net, variables["params"])
    (loss_r, grads_r), out_r = value_and_grad(rewrite_net, variables["params"])
    # Instance norms divide by small standard deviations and amplify float32 rounding a little.
    for a, b in zip(jax.tree_util.tree_leaves((loss_r, out_r)), jax.tree_util.tree_leaves((loss_l, out_l))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))
    assert jax.tree_util.tree_structure(grads_r) == jax.tree_util.tree_structure(grads_l)
    # Scale by the largest gradient of the whole tree: a conv bias feeding an instance norm has a
    # mathematically zero gradient, so both forms give rounding noise of that scale there.
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(grads_l))
    for a, b in zip(jax.tree_util.tree_leaves(grads_r), jax.tree_util.tree_leaves(grads_l)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)


def test_global_generator_lax_and_rewrite_agree():
    x = _normal(3, (1, 16, 24, 5))
    make = lambda impl: GlobalGenerator(3, 4, 2, 2, attention=AttentionConfig(), attention_after_block=0,
                                        conv_impl=impl)
    _same_outputs_and_param_grads(make, x)


def test_multiscale_discriminator_lax_and_rewrite_agree():
    x = _normal(4, (1, 22, 30, 4))  # odd feature maps at every scale
    _same_outputs_and_param_grads(lambda impl: MultiscaleDiscriminator(4, 2, 2, conv_impl=impl), x)


def _ties(seed: int, shape: tuple) -> jax.Array:
    """Values on a coarse grid, so that most 2x2 windows hold repeated maxima (as flat image regions do)."""
    return jnp.round(_normal(seed, shape))


@pytest.mark.parametrize("h, w", [(8, 12), (9, 7)])
def test_max_pool_forms_agree_and_send_each_gradient_to_the_first_maximum(h, w):
    torch = pytest.importorskip("torch")
    x, dy = _ties(5, (2, h, w, 3)), _normal(6, (2, h // 2, w // 2, 3))
    outs = {impl: jax.vjp(lambda a: cr.max_pool_2x2(a, impl), x) for impl in ("rewrite", "lax")}
    xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2), requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, 2, 2)
    yt.backward(torch.tensor(np.asarray(dy).transpose(0, 3, 1, 2)))
    want_y, want_dx = yt.detach().numpy().transpose(0, 2, 3, 1), xt.grad.numpy().transpose(0, 2, 3, 1)
    for y, vjp in outs.values():
        np.testing.assert_array_equal(np.asarray(y), want_y)
        np.testing.assert_array_equal(np.asarray(vjp(dy)[0]), want_dx)


@pytest.mark.parametrize("b, h, w", [(2, 4, 4), (1, 3, 5), (1, 1, 1)])
def test_tapwise_transposed_conv_equals_lax_conv_transpose(b, h, w):
    _check_rewrite(cr.tapwise_transposed_conv, cr.lax_conv_transpose, (b, h, w, 3), (3, 3, 3, 4))


@pytest.mark.parametrize("b, h, w", [(2, 8, 6), (1, 2, 4)])
def test_patch_strided_conv_equals_lax_conv(b, h, w):
    _check_rewrite(cr.patch_strided_conv, lambda x, k: cr.lax_conv(x, k, 2, 1), (b, h, w, 3), (3, 3, 3, 4))
