"""Model sizes, jit, bf16 compute, spectral norm and remat: behaviour users rely on."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pix2pixhd_jax.models import Encoder, GlobalGenerator, LocalEnhancer, MultiscaleDiscriminator
from pix2pixhd_jax.models.layers import count_params
from pix2pixhd_jax.models.vgg import VGG
from run_helpers import random_variables


def _n_params(module, *shapes, dtypes=None):
    dtypes = dtypes or [jnp.float32] * len(shapes)
    args = [jax.ShapeDtypeStruct(s, d) for s, d in zip(shapes, dtypes)]
    return count_params(jax.eval_shape(lambda *a: module.init(jax.random.PRNGKey(0), *a), *args)["params"])


@pytest.mark.parametrize("module, shapes, official", [
    (GlobalGenerator(3, 64, 4, 9), [(1, 16, 16, 36)], 182_546_755),
    (GlobalGenerator(3, 64, 4, 9), [(1, 16, 16, 39)], 182_556_163),
    (LocalEnhancer(3, 32, 4, 9, 1, 3), [(1, 32, 32, 36)], 182_857_059),
    (MultiscaleDiscriminator(64, 3, 1), [(1, 32, 32, 39)], 2_801_601),
    (MultiscaleDiscriminator(64, 3, 2), [(1, 32, 32, 39)], 5_603_202),
    (MultiscaleDiscriminator(64, 3, 3), [(1, 32, 32, 39)], 8_404_803),
    (VGG("vgg19"), [(1, 32, 32, 3)], 12_944_960),
])
def test_parameter_counts_equal_official(module, shapes, official):
    assert _n_params(module, *shapes) == official


def test_encoder_parameter_count_equals_official():
    assert _n_params(Encoder(3, 16, 4), (1, 16, 16, 3), (1, 16, 16), dtypes=[jnp.float32, jnp.int32]) == 788_803


def test_generator_rejects_sizes_it_cannot_reproduce():
    g = GlobalGenerator(3, 4, 2, 1)
    with pytest.raises(ValueError, match="multiples of 4"):
        g.init(jax.random.PRNGKey(0), jnp.zeros((1, 10, 8, 5)))


def _tiny_local():
    return LocalEnhancer(3, 4, 2, 1, 1, 1)


def test_bf16_compute_keeps_float32_params_and_stays_close():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 16, 16, 5))
    variables = jax.jit(_tiny_local().init)(jax.random.PRNGKey(1), x)  # eager init compiles op by op
    variables = jax.tree_util.tree_map(lambda p: p * 8.0, variables)  # make the signal non-trivial
    bf16 = _tiny_local().clone(dtype=jnp.bfloat16)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(jax.eval_shape(bf16.init, jax.random.PRNGKey(1), x)))
    y32 = jax.jit(_tiny_local().apply)(variables, x)
    y16 = jax.jit(bf16.apply)(variables, x)
    assert y16.dtype == jnp.float32  # tanh output is reduced in float32
    assert float(jnp.abs(y32).mean()) > 0.1
    assert float(jnp.abs(y16 - y32).max()) < 0.1


def test_bf16_discriminator_features_close_to_float32():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 24, 24, 4))
    d = MultiscaleDiscriminator(8, 2, 2)
    variables = random_variables(d, x, seed=2)  # weights drawn on the host: no init compile
    out32 = jax.jit(d.apply)(variables, x)
    out16 = jax.jit(d.clone(dtype=jnp.bfloat16).apply)(variables, x)
    for s32, s16 in zip(out32, out16):
        for a, b in zip(s32, s16):
            assert float(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)).max()) <= 0.05 * float(jnp.abs(a).max()) + 1e-3


def test_remat_blocks_give_identical_outputs_and_grads():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 16, 16, 5))
    plain = GlobalGenerator(3, 4, 2, 2)
    variables = random_variables(plain, x, seed=1)
    loss = lambda m: jax.jit(jax.grad(lambda v: jnp.sum(m.apply(v, x, True) ** 2)))(variables)
    grads, remat_grads = loss(plain), loss(plain.clone(remat_blocks=True))
    # A conv bias feeding an instance norm has a true gradient of 0: both sides hold float32 noise
    # there (measured up to 1.3e-5, the kernels' gradients reach 64), so the absolute part of the
    # tolerance is taken at the scale of the whole tree.
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(grads))
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(remat_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * scale)


def test_spectral_norm_bounds_the_largest_singular_value_and_updates_in_train():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
    d = MultiscaleDiscriminator(8, 2, 1, spectral_norm=True)
    variables = jax.jit(d.init)(jax.random.PRNGKey(3), x)
    assert "batch_stats" in variables  # power-iteration state is part of the model's variables
    train_apply = jax.jit(lambda v: d.apply(v, x, True, mutable=["batch_stats"]))
    for _ in range(30):  # power iteration converges over training steps
        _, updates = train_apply(variables)
        variables = {**variables, **updates}
    kernel = variables["params"]["scale0"]["layer1"]["kernel"]
    u = variables["batch_stats"]["scale0"]["layer1"]["spectral_u"]
    m = np.asarray(kernel).reshape(-1, kernel.shape[-1])
    sigma_true = np.linalg.svd(m, compute_uv=False)[0]
    v = np.asarray(u) @ m.T
    v /= np.linalg.norm(v)
    sigma_est = float((v @ m @ np.asarray(u).T)[0, 0])
    assert abs(sigma_est - sigma_true) / sigma_true < 1e-3
    # eval mode does not move the state
    _, same = jax.jit(lambda v: d.apply(v, x, False, mutable=["batch_stats"]))(variables)
    np.testing.assert_array_equal(same["batch_stats"]["scale0"]["layer1"]["spectral_u"], u)


def test_encoder_image_skip_lets_absolute_colour_through_instance_norm():
    """Instance norm makes E blind to a colour shift of the whole photo; the image skip is not."""
    image = jax.random.uniform(jax.random.PRNGKey(0), (1, 16, 16, 3), minval=-0.5, maxval=0.5)
    inst = jnp.zeros((1, 16, 16), jnp.int32).at[:, :, 8:].set(1)
    brighter = image + jnp.asarray([0.3, 0.1, -0.2])
    for skip, changes in ((False, False), (True, True)):
        encoder = Encoder(3, 8, 2, image_skip=skip)
        variables = random_variables(encoder, image, inst, seed=1)
        apply = jax.jit(encoder.apply)
        moved = float(jnp.abs(apply(variables, brighter, inst) - apply(variables, image, inst)).max())
        assert (moved > 1e-3) == changes, (skip, moved)


def test_feature_skip_feeds_the_last_input_channels_to_the_output_conv():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 16, 16, 7))
    for module in (GlobalGenerator(3, 8, 2, 1, output_skip_nc=3), LocalEnhancer(3, 4, 1, 1, 1, 1, output_skip_nc=3)):
        variables = jax.eval_shape(module.init, jax.random.PRNGKey(1), x)  # shapes only: nothing compiled
        kernel = variables["params"]["out"]["conv"]["kernel"]
        assert kernel.shape[-2] == module.ngf + 3, kernel.shape  # the last feature map + 3 skipped channels
        plain = module.clone(output_skip_nc=0)
        assert variables["params"]["out"]["conv"]["kernel"].shape[-2] == (
            jax.eval_shape(plain.init, jax.random.PRNGKey(1), x)["params"]["out"]["conv"]["kernel"].shape[-2] + 3)
