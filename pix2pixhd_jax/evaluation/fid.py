"""FID and KID on InceptionV3 pool3 features (the network of the standard FID code), in Flax.

Weights come only from a LOCAL file: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` state
dict (the TF FID Inception ported to PyTorch) or an `.npz` with the same names. Nothing is
downloaded.

Resize protocol (pytorch-fid's): images in [0, 1] are resized to 299x299 with bilinear
interpolation, half-pixel centres and no antialiasing (torch `F.interpolate(mode='bilinear',
align_corners=False)`), then scaled to [-1, 1]. The 2048-d pool3 features are the global average
of Mixed_7c. FID fits a Gaussian to each feature set; KID is the unbiased MMD^2 with the cubic
polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy import linalg

from pix2pixhd_jax.models.vgg import load_state_dict_file

FID_SIZE = 299  # input size of the FID Inception
FEATURE_DIM = 2048  # pool3 features

MISSING_WEIGHTS_HELP = (
    "FID/KID need the FID InceptionV3 weights from a local file (nothing is downloaded). On a machine "
    "with internet get pytorch-fid's weights, e.g. `wget https://github.com/mseitzer/pytorch-fid/releases/"
    "download/fid_weights/pt_inception-2015-12-05-6726825d.pth` (or `pip install pytorch-fid` and run "
    "`python -c \"from pytorch_fid.inception import fid_inception_v3; import torch; "
    "torch.save(fid_inception_v3().state_dict(), 'pt_inception.pth')\"`), copy the file here and pass its "
    "path (--inception_weights). An .npz with the same state-dict names works without torch."
)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv(nn.Module):
    """torchvision BasicConv2d: conv (no bias), BatchNorm (eps 1e-3, running stats), ReLU."""

    features: int
    kernel: int | Sequence[int]
    stride: int = 1
    padding: int | Sequence[int] = 0

    @nn.compact
    def __call__(self, x):
        ph, pw = _pair(self.padding)
        x = nn.Conv(self.features, _pair(self.kernel), _pair(self.stride), padding=((ph, ph), (pw, pw)),
                    use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3(x):
    """avg_pool2d(3, stride 1, padding 1, count_include_pad=False), as in pytorch-fid's blocks."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x):
    return nn.max_pool(x, (3, 3), strides=(2, 2))


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(64, 1, name="branch1x1")(x)
        b5 = BasicConv(64, 5, padding=2, name="branch5x5_2")(BasicConv(48, 1, name="branch5x5_1")(x))
        b3 = BasicConv(64, 1, name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, 3, padding=1, name="branch3x3dbl_3")(BasicConv(96, 3, padding=1, name="branch3x3dbl_2")(b3))
        bp = BasicConv(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(384, 3, stride=2, name="branch3x3")(x)
        bd = BasicConv(64, 1, name="branch3x3dbl_1")(x)
        bd = BasicConv(96, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, 3, stride=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], -1)


class InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c = self.channels_7x7
        b1 = BasicConv(192, 1, name="branch1x1")(x)
        b7 = BasicConv(c, 1, name="branch7x7_1")(x)
        b7 = BasicConv(c, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv(c, 1, name="branch7x7dbl_1")(x)
        bd = BasicConv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv(c, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv(192, 1, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(320, 3, stride=2, name="branch3x3_2")(BasicConv(192, 1, name="branch3x3_1")(x))
        b7 = BasicConv(192, 1, name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, 3, stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], -1)


class InceptionE(nn.Module):
    """Mixed_7b pools with an average (FIDInceptionE_1), Mixed_7c with a max (FIDInceptionE_2)."""

    pool: str = "avg"

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(320, 1, name="branch1x1")(x)
        b3 = BasicConv(384, 1, name="branch3x3_1")(x)
        b3 = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                              BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], -1)
        bd = BasicConv(384, 3, padding=1, name="branch3x3dbl_2")(BasicConv(448, 1, name="branch3x3dbl_1")(x))
        bd = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                              BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], -1)
        if self.pool == "avg":
            pooled = _avg_pool_3x3(x)
        else:
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        bp = BasicConv(192, 1, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], -1)


class FIDInceptionV3(nn.Module):
    """(B, 299, 299, 3) in [-1, 1] -> (B, 2048) pool3 features; submodule names = state-dict names."""

    @nn.compact
    def __call__(self, x):
        x = BasicConv(32, 3, stride=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, 3, name="Conv2d_2a_3x3")(x)
        x = BasicConv(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = BasicConv(80, 1, name="Conv2d_3b_1x1")(x)
        x = BasicConv(192, 3, name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(c7, name=name)(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE("avg", name="Mixed_7b")(x)
        x = InceptionE("max", name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


def preprocess(images: jax.Array) -> jax.Array:
    """(B, H, W, 3) images in [0, 1] -> (B, 299, 299, 3) in [-1, 1] by the pytorch-fid protocol."""
    images = images.astype(jnp.float32)
    if images.shape[1:3] != (FID_SIZE, FID_SIZE):
        images = jax.image.resize(images, (images.shape[0], FID_SIZE, FID_SIZE, images.shape[3]), "bilinear",
                                  antialias=False)
    return 2.0 * images - 1.0


def variables_from_state_dict(state_dict: Mapping[str, Any]) -> dict:
    """pytorch-fid state dict (`Mixed_5b.branch1x1.conv.weight`, `.bn.running_mean`, ...) -> Flax variables.

    Every conv and BN of FIDInceptionV3 must be present with the right shape; `fc.*` is ignored.
    """
    abstract = jax.eval_shape(FIDInceptionV3().init, jax.random.PRNGKey(0), jnp.zeros((1, FID_SIZE, FID_SIZE, 3)))
    params, stats, problems = {}, {}, []
    flat = {tuple(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(abstract)}
    torch_names = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
                   "var": "running_var"}
    for path, leaf in flat.items():
        collection, *modules, leaf_name = path
        key = ".".join(modules) + "." + torch_names[leaf_name]
        if key not in state_dict:
            problems.append(f"missing {key}")
            continue
        value = np.asarray(state_dict[key], np.float32)
        if leaf_name == "kernel":
            value = np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
        if value.shape != leaf.shape:
            problems.append(f"{key}: shape {value.shape} != expected {leaf.shape}")
            continue
        node = params if collection == "params" else stats
        for m in modules:
            node = node.setdefault(m, {})
        node[leaf_name] = value
    if problems:
        raise ValueError("not a pytorch-fid pt_inception state dict: " + "; ".join(problems[:10])
                         + (f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""))
    return {"params": params, "batch_stats": stats}


def state_dict_from_variables(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Inverse of variables_from_state_dict (writes test fixtures and .npz copies)."""
    names = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
             ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
        collection, *modules, leaf_name = (k.key for k in path)
        value = np.asarray(leaf, np.float32)
        if leaf_name == "kernel":
            value = np.transpose(value, (3, 2, 0, 1))
        out[".".join(modules) + "." + names[(collection, leaf_name)]] = value
    return out


def load_inception(path: str) -> dict:
    """Flax variables of the FID Inception from a local `.pth` / `.npz` (clear error if absent)."""
    return jax.tree_util.tree_map(jnp.asarray, variables_from_state_dict(load_state_dict_file(path, MISSING_WEIGHTS_HELP)))


def make_feature_fn(variables: Any):
    """jitted features(images in [0, 1]) -> (B, 2048) float32; variables are an argument, not a constant."""
    net = FIDInceptionV3()
    fn = jax.jit(lambda v, images: net.apply(v, preprocess(images)))
    return lambda images: np.asarray(fn(variables, jnp.asarray(images)), np.float64)


def extract_features(feature_fn, batches: Iterable[np.ndarray]) -> np.ndarray:
    """Concatenate features of an iterable of (B, H, W, 3) [0, 1] image batches."""
    return np.concatenate([feature_fn(b) for b in batches], axis=0)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (np.cov) of (N, D) features."""
    features = np.asarray(features, np.float64)
    if features.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {features.shape[0]}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)); sqrtm regularised as in the reference code."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in sqrtm of the covariances")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(feats1), *gaussian_stats(feats2))


def polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + coef0)^degree (the KID kernel)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n, d = x.shape[0], y.shape[0], x.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {m} and {n}")
    kxx = (x @ x.T / d + coef0) ** degree
    kyy = (y @ y.T / d + coef0) ** degree
    kxy = (x @ y.T / d + coef0) ** degree
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kid_from_features(feats1: np.ndarray, feats2: np.ndarray, *, num_subsets: int, subset_size: int,
                      seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased polynomial MMD^2 over random subsets (subset_size capped by the sets)."""
    rng = np.random.default_rng(seed)
    size = min(subset_size, len(feats1), len(feats2))
    values = [polynomial_mmd2_unbiased(feats1[rng.choice(len(feats1), size, replace=False)],
                                       feats2[rng.choice(len(feats2), size, replace=False)])
              for _ in range(num_subsets)]
    return float(np.mean(values)), float(np.std(values))
