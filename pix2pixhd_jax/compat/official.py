"""Import of official NVIDIA/pix2pixHD PyTorch state dicts into our Flax modules.

Layout conversions: Conv2d weight (O, I, kh, kw) -> HWIO; ConvTranspose2d weight (I, O, kh, kw) ->
(kh, kw, I, O) (our ConvTranspose stores PyTorch's taps unflipped, see models/layers.py);
BatchNorm2d weight/bias -> scale/bias params, running_mean/var -> the 'batch_stats' collection.
Loading is strict: missing, unexpected or mis-shaped tensors raise one error that lists them all.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from pix2pixhd_jax.models import Encoder, GlobalGenerator, LocalEnhancer, MultiscaleDiscriminator

NETS = ("global", "local", "D", "E")


def official_networks_module():
    """The released code's `networks` module from the `pix2pixhd` PyPI package (needs torch).

    For parity tests and side-by-side benchmarks. torchvision, which it imports only for its VGG19,
    is stubbed when absent so that no torchvision (and no weight download) is needed.
    """
    import sys
    import types

    if "torchvision" not in sys.modules:
        stub = types.ModuleType("torchvision")
        stub.models = types.SimpleNamespace()
        sys.modules["torchvision"] = stub
    from pix2pixhd.models import networks

    return networks
Path = tuple[str, ...]
# (our module path, official tensor prefix, kind in {'conv', 'convT', 'norm'})
Unit = tuple[Path, str, str]


def _global_units(t: str, our: Path, n_down: int, n_blocks: int, with_out: bool) -> list[Unit]:
    """Units of an official GlobalGenerator Sequential `t` (indices follow its layer order)."""
    units = [(our + ("front", "conv"), f"{t}.1", "conv"), (our + ("front", "norm"), f"{t}.2", "norm")]
    for i in range(n_down):
        units += [(our + (f"down{i}", "conv"), f"{t}.{4 + 3 * i}", "conv"),
                  (our + (f"down{i}", "norm"), f"{t}.{5 + 3 * i}", "norm")]
    for j in range(n_blocks):
        units += _resblock_units(f"{t}.{4 + 3 * n_down + j}", our + (f"res{j}",))
    base = 4 + 3 * n_down + n_blocks
    for i in range(n_down):
        units += [(our + (f"up{i}", "conv"), f"{t}.{base + 3 * i}", "convT"),
                  (our + (f"up{i}", "norm"), f"{t}.{base + 3 * i + 1}", "norm")]
    if with_out:
        units.append((our + ("out", "conv"), f"{t}.{base + 3 * n_down + 1}", "conv"))
    return units


def _resblock_units(t: str, our: Path) -> list[Unit]:
    return [(our + ("conv1",), f"{t}.conv_block.1", "conv"), (our + ("norm1",), f"{t}.conv_block.2", "norm"),
            (our + ("conv2",), f"{t}.conv_block.5", "conv"), (our + ("norm2",), f"{t}.conv_block.6", "norm")]


def _local_units(n_down: int, n_blocks: int, n_local: int, n_blocks_local: int) -> list[Unit]:
    units = _global_units("model", ("global_trunk",), n_down, n_blocks, with_out=False)
    for n in range(1, n_local + 1):
        t1, t2 = f"model{n}_1", f"model{n}_2"
        units += [((f"enh{n}_front", "conv"), f"{t1}.1", "conv"), ((f"enh{n}_front", "norm"), f"{t1}.2", "norm"),
                  ((f"enh{n}_down", "conv"), f"{t1}.4", "conv"), ((f"enh{n}_down", "norm"), f"{t1}.5", "norm")]
        for j in range(n_blocks_local):
            units += _resblock_units(f"{t2}.{j}", (f"enh{n}_res{j}",))
        units += [((f"enh{n}_up", "conv"), f"{t2}.{n_blocks_local}", "convT"),
                  ((f"enh{n}_up", "norm"), f"{t2}.{n_blocks_local + 1}", "norm")]
        if n == n_local:
            units.append((("out", "conv"), f"{t2}.{n_blocks_local + 4}", "conv"))
    return units


def _d_units(n_layers: int, num_D: int, get_interm_feat: bool) -> list[Unit]:
    units = []
    for s in range(num_D):
        for j in range(n_layers + 2):
            if get_interm_feat:
                conv_t, norm_t = f"scale{s}_layer{j}.0", f"scale{s}_layer{j}.1"
            else:  # one flat Sequential: [conv, lrelu] + n_layers * [conv, norm, lrelu] + [conv]
                start = 0 if j == 0 else 2 + 3 * (j - 1)
                conv_t, norm_t = f"layer{s}.{start}", f"layer{s}.{start + 1}"
            units.append(((f"scale{s}", f"layer{j}"), conv_t, "conv"))
            if 1 <= j <= n_layers:
                units.append(((f"scale{s}", f"layer{j}_norm"), norm_t, "norm"))
    return units


def build_module(net: str, **options: Any) -> tuple[nn.Module, list[Unit], tuple[jax.ShapeDtypeStruct, ...]]:
    """Our module for an official network and options, its tensor map and a sample input shape."""
    o = dict(options)
    upsample_layer = o.pop("upsample_layer", "transpose")
    if upsample_layer != "transpose":
        raise ValueError(f"upsample_layer={upsample_layer!r}: official pix2pixHD checkpoints hold transposed-conv "
                         "upsampling weights, which a model with another upsampling layer has no place for. Import "
                         "with upsample_layer='transpose' (model.upsample_layer='transpose', the default), or train "
                         "the other layer from scratch.")
    norm = o.pop("norm", "instance")
    pop = lambda k, d: o.pop(k, d)
    if net == "global":
        input_nc = pop("input_nc", 36)
        n_down, n_blocks = pop("n_downsample_global", 4), pop("n_blocks_global", 9)
        module = GlobalGenerator(pop("output_nc", 3), pop("ngf", 64), n_down, n_blocks, norm=norm)
        units = _global_units("model", (), n_down, n_blocks, with_out=True)
        side = 2**n_down
        inputs = (jax.ShapeDtypeStruct((1, side, side, input_nc), jnp.float32),)
    elif net == "local":
        input_nc = pop("input_nc", 36)
        n_down, n_blocks = pop("n_downsample_global", 4), pop("n_blocks_global", 9)
        n_local, n_blocks_local = pop("n_local_enhancers", 1), pop("n_blocks_local", 3)
        module = LocalEnhancer(pop("output_nc", 3), pop("ngf", 32), n_down, n_blocks, n_local, n_blocks_local,
                               norm=norm)
        units = _local_units(n_down, n_blocks, n_local, n_blocks_local)
        side = 2 ** (n_down + n_local)
        inputs = (jax.ShapeDtypeStruct((1, side, side, input_nc), jnp.float32),)
    elif net == "D":
        input_nc = pop("input_nc", 39)
        n_layers, num_D, interm = pop("n_layers_D", 3), pop("num_D", 2), pop("getIntermFeat", True)
        module = MultiscaleDiscriminator(pop("ndf", 64), n_layers, num_D, norm=norm, get_interm_feat=interm)
        units = _d_units(n_layers, num_D, interm)
        inputs = (jax.ShapeDtypeStruct((1, 32, 32, input_nc), jnp.float32),)
    elif net == "E":
        image_nc, n_down = pop("output_nc", 3), pop("n_downsample_E", 4)
        module = Encoder(pop("feat_num", 3), pop("nef", 16), n_down, norm=norm)
        units = _global_units("model", ("net",), n_down, 0, with_out=True)
        side = 2**n_down
        inputs = (jax.ShapeDtypeStruct((1, side, side, image_nc), jnp.float32),
                  jax.ShapeDtypeStruct((1, side, side, 1), jnp.int32))
    else:
        raise ValueError(f"net {net!r} is not one of {NETS}")
    if o:
        raise TypeError(f"unknown options for net={net!r}: {sorted(o)}")
    return module, units, inputs


def _tensor_map(units: list[Unit]) -> dict[tuple[str, Path], tuple[str, str]]:
    """(collection, our leaf path) -> (official tensor name, conversion)."""
    out = {}
    for path, t, kind in units:
        if kind in ("conv", "convT"):
            out[("params", path + ("kernel",))] = (f"{t}.weight", kind)
            out[("params", path + ("bias",))] = (f"{t}.bias", "copy")
        else:
            bn = path + ("BatchNorm_0",)
            out[("params", bn + ("scale",))] = (f"{t}.weight", "copy")
            out[("params", bn + ("bias",))] = (f"{t}.bias", "copy")
            out[("batch_stats", bn + ("mean",))] = (f"{t}.running_mean", "copy")
            out[("batch_stats", bn + ("var",))] = (f"{t}.running_var", "copy")
    return out


def _convert(array: np.ndarray, how: str) -> np.ndarray:
    array = np.asarray(array, np.float32)
    if how == "conv":
        return np.transpose(array, (2, 3, 1, 0))
    if how == "convT":
        return np.transpose(array, (2, 3, 0, 1))
    return array


def build_from_torch(state_dict: Mapping[str, Any], net: str, **options: Any) -> tuple[nn.Module, dict]:
    """Official state dict (names -> arrays) -> (our module, its variables), strictly checked.

    net: 'global' | 'local' | 'D' | 'E'; options use the official option names (see build_module).
    """
    module, units, inputs = build_module(net, **options)
    abstract = jax.eval_shape(lambda *a: module.init(jax.random.PRNGKey(0), *a), *inputs)
    expected = {(col, path): leaf for col, tree in abstract.items()
                for path, leaf in traverse_util.flatten_dict(dict(tree)).items()}
    tensor_map = _tensor_map(units)
    state = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in state_dict.items()}

    missing, mismatched, flat = [], [], {}
    for key, leaf in expected.items():
        if key not in tensor_map:
            raise AssertionError(f"no official name known for {key}")  # a bug in the unit tables
        name, how = tensor_map[key]
        if name not in state:
            missing.append(name)
            continue
        value = _convert(state[name], how)
        if value.shape != leaf.shape:
            mismatched.append(f"{name}: file {tuple(state[name].shape)} -> {value.shape}, model expects {leaf.shape}")
            continue
        flat[key] = value
    used = {tensor_map[k][0] for k in expected}
    unexpected = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked"))
    if missing or mismatched or unexpected:
        lines = [f"state dict does not match net={net!r} with options {options}:"]
        lines += [f"  missing: {n}" for n in missing] + [f"  shape mismatch: {m}" for m in mismatched]
        lines += [f"  unexpected: {n}" for n in unexpected]
        lines.append("Check input_nc (label_nc + 1 edge channel unless no_instance, + feat_num with instance_feat), "
                     "ngf/ndf, numbers of layers/blocks and norm against the options the checkpoint was trained with.")
        raise ValueError("\n".join(lines))
    variables: dict = {}
    for (col, path), value in flat.items():
        variables.setdefault(col, {})[path] = jnp.asarray(value)
    return module, {col: traverse_util.unflatten_dict(tree) for col, tree in variables.items()}


def load_pth(path: str) -> dict[str, np.ndarray]:
    """Read an official `*_net_{G,D,E}.pth` into name -> numpy (needs the torch extra)."""
    from pix2pixhd_jax.models.vgg import load_state_dict_file

    state = load_state_dict_file(path, missing_help="Give the path of an official checkpoint, e.g. "
                                 "checkpoints/label2city_512p/latest_net_G.pth.")
    # A state dict saved from a DataParallel wrapper carries a 'module.' prefix on every name.
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state
