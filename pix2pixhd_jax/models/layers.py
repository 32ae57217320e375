"""Building blocks shared by the generators, discriminator and encoder (NHWC, PyTorch semantics).

How every conv, norm and upsampling layer of a network is built is said once, by the keyword-only
fields of two base modules: `ConvOptions` (init_std, spectral_norm, dtype, conv_impl) and
`LayerOptions` (those plus norm, upsample_impl, upsample_layer). Blocks and networks inherit them,
build their layers through `self.conv` / `self.norm_layer` / `self.upsample`, and hand the whole
set on to a child with `**self.layer_options` (models/factory.py reads them from the config once).
Inherited fields rather than flax imagenet's `ModuleDef` partials: a partial compares by identity,
so as a module attribute it would make two builds of one config unequal (the networks are static
jit arguments), and made inside each `__call__` it would still need these fields to be made from;
as fields they stay settable by keyword (`norm="batch"`, `.clone(dtype=jnp.bfloat16)`, the
official import) and print in a module's repr. `conv_impl` ('auto' | 'rewrite' | 'lax') picks the
computational form of a convolution per backend (models/conv_rewrites.py); parameters never
depend on it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from pix2pixhd_jax.choices import NORMS, UPSAMPLE_LAYERS
from pix2pixhd_jax.models.conv_rewrites import (  # noqa: F401  (some re-exported)
    CONV_IMPLS,
    UPSAMPLE_IMPLS,
    conv2d,
    conv_transpose_3x3_s2,
    conv_valid,
    depth_to_space,
    max_pool_2x2,
    unfused,
)

Dtype = Any
Array = jax.Array

# How the generators and the encoder double H and W (config model.upsample_layer, UPSAMPLE_LAYERS);
# each value owns differently named parameters, so a checkpoint of one never loads silently into another.


def torch_bias_init(fan_in: int) -> Callable:
    """PyTorch's default conv bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)); official code keeps it."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def reflect_pad(x: Array, pad: int) -> Array:
    """ReflectionPad2d(pad) on an NHWC tensor."""
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def avg_pool_3x3_s2(x: Array) -> Array:
    """AvgPool2d(3, stride=2, padding=1, count_include_pad=False): the official pyramid downsample."""
    return nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=False)


# Instance norm's statistics, for rendering a window of an image as part of the whole image
# (editing/window.py). Both collections are absent in training, synthesis and the official parity
# path, where Norm is flax's InstanceNorm as is.
#   NORM_STATS   per layer 'mean' and 'mean_sq' (B, C) float32 over the whole image, 'count' its H*W:
#                recorded when the collection is mutable and empty (a full render); when given, the
#                layer normalises with them instead of its input's own
#   WINDOW_SUMS  per layer 'sum' and 'sum_sq' (B, C) over the window: recorded when mutable (a window
#                of the scene the statistics belong to); when given, the layer shifts the statistics
#                by what its input's sums differ from them (the edited window's share of the whole),
#                normalises with the shifted ones and, if NORM_STATS is mutable, records them with
#                the window's own sums ('window_sum', 'window_sum_sq': the WINDOW_SUMS of the edited
#                scene, for the next edit in the same window). With a 'region' (int32 [r0, r1, c0, c1,
#                height, width]: a box of a height x width window, in its pixels, aligned to every
#                layer's grid) the shift takes the window's sums inside that box only (the given sums
#                are then of that box too); 'window_sum' stays the whole window's
NORM_STATS = "norm_stats"
WINDOW_SUMS = "norm_window_sums"
INSTANCE_NORM_EPS = 1e-5


def spatial_sums(x: Array) -> tuple[Array, Array]:
    """(sum, sum of squares) over H and W of an NHWC tensor, each (B, C) float32."""
    x = x.astype(jnp.float32)
    return x.sum((1, 2)), jnp.square(x).sum((1, 2))


def region_mask(shape: tuple[int, ...], region: Array) -> Array:
    """(1, h, w, 1) float32: 1 on the cells of an NHWC tensor of `shape` inside WINDOW_SUMS' 'region'.

    A cell of a layer h cells high covers pixel rows [i * height / h, (i + 1) * height / h) of the
    window; it is inside when those rows all are (integer arithmetic: exact for an aligned box).
    """
    r0, r1, c0, c1, height, width = (region[i] for i in range(6))
    h, w = shape[1], shape[2]
    rows, cols = jnp.arange(h), jnp.arange(w)
    rows_in = (rows * height >= r0 * h) & ((rows + 1) * height <= r1 * h)
    cols_in = (cols * width >= c0 * w) & ((cols + 1) * width <= c1 * w)
    return (rows_in[:, None] & cols_in[None, :]).astype(jnp.float32)[None, :, :, None]


def normalize_with(x: Array, mean: Array, mean_sq: Array, dtype: Dtype) -> Array:
    """x normalised with given (B, C) statistics (biased variance, clipped at 0 as flax does) instead of its own."""
    var = jnp.maximum(0.0, mean_sq - jnp.square(mean))
    scale = jax.lax.rsqrt(var + INSTANCE_NORM_EPS)[:, None, None, :]
    return ((x.astype(jnp.float32) - mean[:, None, None, :]) * scale).astype(dtype)


class Norm(nn.Module):
    """Instance norm (no affine, eps 1e-5, biased variance), batch norm (affine, running stats) or none.

    Instance norm also records or uses whole-image statistics through the NORM_STATS and
    WINDOW_SUMS collections (above) when a caller passes them; without them it is flax's InstanceNorm.
    """

    kind: str = "instance"
    _: dataclasses.KW_ONLY
    dtype: Dtype = jnp.float32
    conv_impl: str = "auto"  # the barrier before instance norm belongs to the CPU rewrites

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        if self.kind == "instance":
            # The barrier keeps XLA CPU from fusing the statistics reduction into the producing
            # conv, which slows that conv down (7x7 front conv forward 0.36 s -> 0.24 s at 512x256
            # without the fusion); an identity, so numerics are unchanged.
            # Statistics are reduced in float32 by flax even for bf16 activations.
            x = unfused(x, self.conv_impl)
            if self.has_variable(NORM_STATS, "mean"):
                return self._with_given_stats(x)
            if self.is_mutable_collection(NORM_STATS) and not self.is_initializing():  # init keeps no stats
                total, total_sq = spatial_sums(x)
                count = x.shape[1] * x.shape[2]
                self.put_variable(NORM_STATS, "mean", total / count)
                self.put_variable(NORM_STATS, "mean_sq", total_sq / count)
                self.put_variable(NORM_STATS, "count", jnp.float32(count))
            return nn.InstanceNorm(epsilon=INSTANCE_NORM_EPS, use_scale=False, use_bias=False, dtype=self.dtype)(x)
        if self.kind == "batch":
            # PyTorch momentum 0.1 == flax momentum 0.9 (weight of the old running value).
            return nn.BatchNorm(
                use_running_average=not train,
                momentum=0.9,
                epsilon=1e-5,
                dtype=self.dtype,
                scale_init=_batchnorm_scale_init,
            )(x)
        if self.kind == "none":
            return x
        raise ValueError(f"norm={self.kind!r} is not one of {NORMS}")

    def _with_given_stats(self, x: Array) -> Array:
        """x normalised with the NORM_STATS given, shifted by the window's sums when WINDOW_SUMS is given."""
        mean, mean_sq = self.get_variable(NORM_STATS, "mean"), self.get_variable(NORM_STATS, "mean_sq")
        total, total_sq = spatial_sums(x)
        if self.is_mutable_collection(WINDOW_SUMS):
            self.put_variable(WINDOW_SUMS, "sum", total)
            self.put_variable(WINDOW_SUMS, "sum_sq", total_sq)
        elif self.has_variable(WINDOW_SUMS, "sum"):
            count = self.get_variable(NORM_STATS, "count")
            ours, ours_sq = total, total_sq
            if self.has_variable(WINDOW_SUMS, "region"):
                ours, ours_sq = spatial_sums(x * region_mask(x.shape, self.get_variable(WINDOW_SUMS, "region")))
            mean = mean + (ours - self.get_variable(WINDOW_SUMS, "sum")) / count
            mean_sq = mean_sq + (ours_sq - self.get_variable(WINDOW_SUMS, "sum_sq")) / count
            if self.is_mutable_collection(NORM_STATS):
                for name, value in (("mean", mean), ("mean_sq", mean_sq), ("window_sum", total),
                                    ("window_sum_sq", total_sq)):
                    self.put_variable(NORM_STATS, name, value)
        return normalize_with(x, mean, mean_sq, self.dtype)


def _batchnorm_scale_init(key, shape, dtype=jnp.float32):
    """Official weights_init: BatchNorm weight ~ N(1, 0.02)."""
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class ConvOptions(nn.Module):
    """Base of every module with convs: how its convs are built (keyword-only fields, declared once here)."""

    _: dataclasses.KW_ONLY
    init_std: float = 0.02  # kernels ~ N(0, init_std) (official weights_init)
    spectral_norm: bool = False  # divide every kernel by its largest singular value (beyond the paper)
    dtype: Dtype = jnp.float32  # compute dtype; params stay float32
    conv_impl: str = "auto"  # computational form: 'auto' | 'rewrite' | 'lax' (conv_rewrites.py)

    @property
    def conv_options(self) -> dict[str, Any]:
        """These fields, to hand on whole: Child(..., **self.conv_options)."""
        return dict(init_std=self.init_std, spectral_norm=self.spectral_norm, dtype=self.dtype,
                    conv_impl=self.conv_impl)

    def conv(self, features: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
             name: str) -> Conv:
        """A Conv submodule of this module built with these options (call inside a compact method)."""
        return Conv(features, kernel_size, stride=stride, padding=padding, name=name, **self.conv_options)


class LayerOptions(ConvOptions):
    """Base of every block and network: ConvOptions plus how it normalises and upsamples.

    A block receives the whole set and uses what it needs (the discriminator has no upsampling
    layer, a residual block none either); values are checked where they are used.
    """

    _: dataclasses.KW_ONLY
    norm: str = "instance"  # one of NORMS
    upsample_impl: str = "tapwise"  # form of the transposed conv: 'tapwise' | 'subpixel' | 'xla' (conv_rewrites.py)
    upsample_layer: str = "transpose"  # layer that doubles H and W, one of UPSAMPLE_LAYERS ('transpose' is official)

    @property
    def layer_options(self) -> dict[str, Any]:
        """These fields, to hand on whole: Child(..., **self.layer_options)."""
        return dict(self.conv_options, norm=self.norm, upsample_impl=self.upsample_impl,
                    upsample_layer=self.upsample_layer)

    def norm_layer(self, name: str) -> Norm:
        """A Norm submodule of kind `norm` (call inside a compact method)."""
        return Norm(self.norm, dtype=self.dtype, conv_impl=self.conv_impl, name=name)

    def upsample(self, x: Array, features: int, train: bool) -> Array:
        """x with H and W doubled by the `upsample_layer` (upsample_2x; call inside a compact method)."""
        return upsample_2x(x, features, self.upsample_layer, train, impl=self.upsample_impl, **self.conv_options)


class Conv(ConvOptions):
    """Conv2d with PyTorch init and zero-padding semantics, optionally spectrally normalised.

    Reflect padding is applied by the caller, as the official Sequentials do with ReflectionPad2d.
    The kernel is HWIO: kernel[ky, kx, i, o] == torch_weight[o, i, ky, kx].
    """

    features: int
    kernel_size: int
    _: dataclasses.KW_ONLY
    stride: int = 1
    padding: int = 0

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        k, in_features = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", nn.initializers.normal(self.init_std), (k, k, in_features, self.features))
        bias = self.param("bias", torch_bias_init(in_features * k * k), (self.features,))
        if self.spectral_norm:
            kernel = _spectral_normalize(self, kernel, train)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        return conv2d(x, kernel, self.stride, self.padding, self.conv_impl) + bias.astype(self.dtype)


class ConvTranspose(ConvOptions):
    """ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1): exactly doubles H and W.

    The kernel is stored as (3, 3, in, out) with kernel[ky, kx, i, o] == torch_weight[i, o, ky, kx]
    (no spatial flip). `impl` ('tapwise' | 'subpixel' | 'xla', config model.upsample_impl) and `conv_impl`
    together pick the form: the tap-wise GEMM or the sub-pixel 2x2 conv only where rewrites are in
    use, lax.conv_transpose otherwise (models/conv_rewrites.py).
    """

    features: int
    _: dataclasses.KW_ONLY
    impl: str = "tapwise"

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        in_features = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.normal(self.init_std), (3, 3, in_features, self.features))
        # PyTorch computes a ConvTranspose2d's fan_in from weight.size(1) == out_channels.
        bias = self.param("bias", torch_bias_init(self.features * 9), (self.features,))
        if self.spectral_norm:
            kernel = _spectral_normalize(self, kernel, train)
        kernel = kernel.astype(self.dtype)
        x = x.astype(self.dtype)
        return conv_transpose_3x3_s2(x, kernel, self.impl, self.conv_impl) + bias.astype(self.dtype)


class NoiseInput(nn.Module):
    """x + one map of N(0, 1) noise per image, broadcast over channels, times a learned per-channel scale.

    Beyond the paper (model.noise_inputs): gives G a source of fine texture that is not tied to the
    pixel grid, so it need not draw texture with the upsampling layers' per-phase pattern. The scale
    starts at 0 (the layer starts as the identity). Training draws fresh noise per image from the
    'noise' rng; without one (samples, evaluation, inference) every image takes the same fixed draw,
    so a render repeats and does not depend on what else is in its batch.
    """

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param("scale", nn.initializers.zeros, (x.shape[-1],), jnp.float32)
        if self.has_rng("noise"):
            noise = jax.random.normal(self.make_rng("noise"), (*x.shape[:-1], 1), jnp.float32)
        else:
            noise = jax.random.normal(jax.random.PRNGKey(0), (1, *x.shape[1:-1], 1), jnp.float32)
        return x + (noise * scale).astype(x.dtype)


def upsample_nearest_2x(x: Array) -> Array:
    """Nearest-neighbour 2x upsampling of an NHWC tensor (each pixel becomes a 2x2 block)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def upsample_bilinear_2x(x: Array) -> Array:
    """Bilinear 2x upsampling with half-pixel centres and clamped edges (jax.image.resize 'bilinear').

    Output pixel 2i sits a quarter pixel before input pixel i and 2i+1 a quarter after, so each is
    3/4 of its own input pixel and 1/4 of the neighbour on its side; a fixed, separable filter.
    """
    for axis in (1, 2):
        n = x.shape[axis]
        pad = [(0, 0)] * x.ndim
        pad[axis] = (1, 1)
        xp = jnp.pad(x, pad, mode="edge")
        prev, here, nxt = (jax.lax.slice_in_dim(xp, s, s + n, axis=axis) for s in (0, 1, 2))
        even, odd = 0.25 * prev + 0.75 * here, 0.75 * here + 0.25 * nxt
        x = jnp.stack([even, odd], axis=axis + 1).reshape(x.shape[:axis] + (2 * n,) + x.shape[axis + 1:])
    return x


def icnr_init(std: float) -> Callable:
    """ICNR init of a (k, k, I, 4*O) sub-pixel kernel: one N(0, std) (k, k, I, O) kernel copied to all
    four output phases, so after depth-to-space the layer starts as a conv followed by nearest-neighbour
    upsampling (no checkerboard at init; Aitken et al. 2017)."""

    def init(key, shape, dtype=jnp.float32):
        base = std * jax.random.normal(key, shape[:-1] + (shape[-1] // 4,), dtype)
        return jnp.concatenate([base] * 4, axis=-1)

    return init


class SubpixelConv(ConvOptions):
    """Reflect pad 1, 3x3 conv to 4*features channels, depth-to-space: doubles H and W.

    The kernel is ICNR-initialised and the bias is shared by the four phases, so it starts as
    nearest-neighbour upsampling of one 3x3 conv's output.
    """

    features: int

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        in_features = x.shape[-1]
        kernel = self.param("kernel", icnr_init(self.init_std), (3, 3, in_features, 4 * self.features))
        bias = self.param("bias", torch_bias_init(in_features * 9), (self.features,))
        if self.spectral_norm:
            kernel = _spectral_normalize(self, kernel, train)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        y = conv2d(reflect_pad(x, 1), kernel, 1, 0, self.conv_impl)
        return depth_to_space(y, 2) + bias.astype(self.dtype)


def upsample_2x(x: Array, features: int, layer: str, train: bool, *, impl: str = "tapwise", init_std: float = 0.02,
                spectral_norm: bool = False, dtype: Dtype = jnp.float32, conv_impl: str = "auto") -> Array:
    """Double H and W with the layer `layer` names (config model.upsample_layer); call inside a compact method.

      'transpose'      the official ConvTranspose2d(3, stride 2) (submodule `conv`; `impl` picks its form)
      'resize_conv'    nearest-neighbour 2x, reflect pad 1, 3x3 conv (submodule `resize_conv`)
      'bilinear_conv'  bilinear 2x, reflect pad 1, 3x3 conv (submodule `bilinear_conv`)
      'subpixel_icnr'  3x3 conv to 4x channels + depth-to-space, ICNR init (submodule `subpixel_icnr`)

    A strided transposed conv gives even and odd output pixels different sums of kernel taps, so a
    flat input already comes out as a 2-pixel checkerboard, and stacked layers leave 4- and 8-pixel
    lattices in the images; a resize followed by a conv treats every output pixel alike. The
    submodule is created in the caller's scope, so 'transpose' keeps the official parameter paths.
    """
    kw = dict(init_std=init_std, spectral_norm=spectral_norm, dtype=dtype, conv_impl=conv_impl)  # ConvOptions
    if layer == "transpose":
        return ConvTranspose(features, impl=impl, name="conv", **kw)(x, train)
    if layer in ("resize_conv", "bilinear_conv"):
        resize = upsample_nearest_2x if layer == "resize_conv" else upsample_bilinear_2x
        return Conv(features, 3, name=layer, **kw)(reflect_pad(resize(x), 1), train)
    if layer == "subpixel_icnr":
        return SubpixelConv(features, name="subpixel_icnr", **kw)(x, train)
    raise ValueError(f"upsample layer {layer!r} is not one of {UPSAMPLE_LAYERS} (model.upsample_layer)")


def _spectral_normalize(module: nn.Module, kernel: Array, train: bool, n_steps: int = 1, eps: float = 1e-12) -> Array:
    """Divide a (.., in, out) kernel by its largest singular value (one power iteration per call)."""
    matrix = kernel.reshape(-1, kernel.shape[-1])
    u_var = module.variable(
        "batch_stats", "spectral_u", lambda: jax.random.normal(jax.random.PRNGKey(0), (1, matrix.shape[-1]), jnp.float32)
    )
    u = u_var.value
    for _ in range(n_steps):
        v = u @ jax.lax.stop_gradient(matrix).T
        v = v / (jnp.linalg.norm(v) + eps)
        u = v @ jax.lax.stop_gradient(matrix)
        u = u / (jnp.linalg.norm(u) + eps)
    if train and not module.is_initializing():
        u_var.value = u
    sigma = (v @ matrix @ u.T)[0, 0]
    return kernel / sigma


class ResnetBlock(LayerOptions):
    """x + [reflect1, conv3, norm, relu, reflect1, conv3, norm](x); no activation after the sum."""

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        dim = x.shape[-1]
        y = self.conv(dim, 3, name="conv1")(reflect_pad(x, 1), train)
        y = nn.relu(self.norm_layer("norm1")(y, train))
        y = self.conv(dim, 3, name="conv2")(reflect_pad(y, 1), train)
        return x + self.norm_layer("norm2")(y, train)


def resnet_block(remat: bool) -> type[ResnetBlock]:
    """ResnetBlock, or with remat its rematerialised form (activations recomputed in the backward pass)."""
    return nn.remat(ResnetBlock, static_argnums=(2,)) if remat else ResnetBlock


def count_params(tree: Any) -> int:
    """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))
