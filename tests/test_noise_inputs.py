"""model.noise_inputs: G's learned-scale per-pixel noise after each upsampling layer (beyond the paper)."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from pix2pixhd_jax.models.generator import GlobalGenerator, LocalEnhancer
from pix2pixhd_jax.models.layers import NoiseInput

X = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 5))


def _with_scales(variables, value):
    flat = traverse_util.flatten_dict(variables["params"])
    flat = {k: jnp.full_like(v, value) if "noise" in k else v for k, v in flat.items()}
    return {**variables, "params": traverse_util.unflatten_dict(flat)}


@pytest.mark.parametrize("make", [lambda noise: GlobalGenerator(3, 4, 2, 1, noise_inputs=noise),
                                  lambda noise: LocalEnhancer(3, 4, 1, 1, n_local_enhancers=1, n_blocks_local=1,
                                                              noise_inputs=noise)],
                         ids=["global", "local"])
def test_noise_starts_as_the_identity_then_draws_per_rng_and_repeats_without_one(make):
    plain, noisy = make(False), make(True)
    v_plain, v_noisy = plain.init(jax.random.PRNGKey(1), X), noisy.init(jax.random.PRNGKey(1), X)
    flat_plain, flat_noisy = (traverse_util.flatten_dict(v["params"]) for v in (v_plain, v_noisy))
    extra = sorted(set(flat_noisy) - set(flat_plain))
    # One scale per upsampling layer, nothing else new, every other weight initialised the same.
    assert extra and all(k[-2:] == ("noise", "scale") for k in extra)
    ups = {k[:i + 1] for k in flat_plain for i, p in enumerate(k) if re.fullmatch(r"up\d+|enh\d+_up", p)}
    assert {k[:-2] for k in extra} == ups
    for k, v in flat_plain.items():
        np.testing.assert_array_equal(flat_noisy[k], v)
    # Scales at 0: the noisy G is the plain G.
    np.testing.assert_allclose(noisy.apply(v_noisy, X), plain.apply(v_plain, X), atol=1e-6)
    # Scales on: a render without an rng repeats; with one, each key draws its own noise.
    v_on = _with_scales(v_noisy, 1.0)
    fixed = noisy.apply(v_on, X)
    np.testing.assert_array_equal(noisy.apply(v_on, X), fixed)
    a = noisy.apply(v_on, X, rngs={"noise": jax.random.PRNGKey(2)})
    b = noisy.apply(v_on, X, rngs={"noise": jax.random.PRNGKey(3)})
    assert float(jnp.abs(a - b).mean()) > 1e-3 and float(jnp.abs(a - fixed).mean()) > 1e-3


def test_noise_is_one_map_per_image_scaled_per_channel():
    x = jnp.zeros((2, 6, 7, 3))
    layer = NoiseInput()
    assert layer.init(jax.random.PRNGKey(0), x)["params"]["scale"].shape == (3,)
    v = {"params": {"scale": jnp.asarray([1.0, -2.0, 0.0])}}
    out = layer.apply(v, x, rngs={"noise": jax.random.PRNGKey(5)})
    np.testing.assert_allclose(out[..., 1], -2.0 * out[..., 0], rtol=1e-6)
    assert not np.any(out[..., 2])
    assert float(jnp.abs(out[0, ..., 0] - out[1, ..., 0]).mean()) > 0.1  # images draw their own map
    # Without an rng every image takes the one fixed draw: a render does not depend on its batch.
    fixed = layer.apply(v, x)
    np.testing.assert_array_equal(fixed[0], fixed[1])
    np.testing.assert_array_equal(layer.apply(v, x[:1])[0], fixed[0])
    assert 0.7 < float(jnp.std(out[..., 0])) < 1.3


def test_the_editor_renders_a_noisy_model_whole_not_in_windows():
    from pix2pixhd_jax.configs import synthetic_features
    from pix2pixhd_jax.editing.window import supports_windows

    config = synthetic_features.get_config()
    assert supports_windows(config.model) == (True, "")
    config.model.noise_inputs = True
    ok, why = supports_windows(config.model)
    assert not ok and "model.noise_inputs" in why
