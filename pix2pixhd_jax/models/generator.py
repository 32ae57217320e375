"""Coarse-to-fine generators: GlobalGenerator (G1) and LocalEnhancer (G2..Gn), NHWC."""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from pix2pixhd_jax.models.attention import AttentionConfig, SelfAttention
from pix2pixhd_jax.models.layers import (
    Array,
    Conv,
    Dtype,
    Norm,
    ResnetBlock,
    avg_pool_3x3_s2,
    reflect_pad,
    upsample_2x,
)


class ConvNormReLU(nn.Module):
    """[reflect pad] conv, norm, ReLU: the repeated unit of every official Sequential."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    reflect: int = 0
    norm: str = "instance"
    init_std: float = 0.02
    spectral_norm: bool = False
    dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        if self.reflect:
            x = reflect_pad(x, self.reflect)
        x = Conv(self.features, self.kernel_size, self.stride, self.padding, self.init_std, self.spectral_norm,
                 self.dtype, self.conv_impl, name="conv")(x, train)
        return nn.relu(Norm(self.norm, self.dtype, self.conv_impl, name="norm")(x, train))


class UpNormReLU(nn.Module):
    """The layer that doubles H and W (official: a transposed conv; layers.upsample_2x), norm, ReLU."""

    features: int
    norm: str = "instance"
    init_std: float = 0.02
    upsample_impl: str = "tapwise"
    spectral_norm: bool = False
    dtype: Dtype = jnp.float32
    conv_impl: str = "auto"
    upsample_layer: str = "transpose"  # 'transpose' (official) | 'resize_conv' | 'bilinear_conv' | 'subpixel_icnr'

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = upsample_2x(x, self.features, self.upsample_layer, train, impl=self.upsample_impl, init_std=self.init_std,
                        spectral_norm=self.spectral_norm, dtype=self.dtype, conv_impl=self.conv_impl)
        return nn.relu(Norm(self.norm, self.dtype, self.conv_impl, name="norm")(x, train))


class OutputConv(nn.Module):
    """Reflect pad 3, 7x7 conv to the output channels, tanh."""

    features: int
    init_std: float = 0.02
    spectral_norm: bool = False
    dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = Conv(self.features, 7, init_std=self.init_std, spectral_norm=self.spectral_norm, dtype=self.dtype,
                 conv_impl=self.conv_impl, name="conv")(reflect_pad(x, 3), train)
        # tanh in float32: the image range is what the losses compare.
        return jnp.tanh(x.astype(jnp.float32))


class GlobalGenerator(nn.Module):
    """G1: 7x7 front end, strided downsampling, residual blocks, upsampling (official: transposed convs), 7x7 + tanh.

    Submodules: `front`, `down{i}`, `res{i}`, `up{i}`, `out` (absent when with_output=False: the
    trunk of a LocalEnhancer ends in the last upsampling unit, ngf channels at input resolution).
    With output_skip_nc = k > 0 (beyond the paper) `out` also sees the last k input channels (the
    pooled instance features), so a feature sets a region's colour through one conv instead of
    passing every normalised layer of the trunk.
    With `attention` set, a SelfAttention block `attn` sits in the bottleneck after residual block
    `attention_after_block` (-1 = after the last; beyond the paper, absent by default).
    """

    output_nc: int = 3
    ngf: int = 64
    n_downsample_global: int = 4
    n_blocks_global: int = 9
    norm: str = "instance"
    with_output: bool = True
    upsample_impl: str = "tapwise"
    remat_blocks: bool = False
    spectral_norm: bool = False
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    attention: Optional[AttentionConfig] = None
    attention_after_block: int = -1
    conv_impl: str = "auto"  # computational form of the convs ('auto' | 'rewrite' | 'lax'; conv_rewrites.py)
    output_skip_nc: int = 0
    upsample_layer: str = "transpose"  # the layer of `up{i}` (layers.upsample_2x); 'transpose' is official

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        check_divisible(x, 2**self.n_downsample_global, "GlobalGenerator")
        skip = x[..., x.shape[-1] - self.output_skip_nc:]
        kw = dict(norm=self.norm, init_std=self.init_std, spectral_norm=self.spectral_norm, dtype=self.dtype,
                  conv_impl=self.conv_impl)
        attn_at = self.n_blocks_global - 1 if self.attention_after_block == -1 else self.attention_after_block
        if self.attention is not None and not (0 <= attn_at < self.n_blocks_global or attn_at == -1):
            raise ValueError(f"model.g_attention_after_block={self.attention_after_block} is not a residual block of "
                             f"G1 with n_blocks_global={self.n_blocks_global} (0..{self.n_blocks_global - 1}, or -1)")
        attend = lambda x: SelfAttention(self.attention, self.spectral_norm, self.init_std, self.dtype,
                                         self.conv_impl, name="attn")(x, train)
        x = ConvNormReLU(self.ngf, 7, reflect=3, name="front", **kw)(x, train)
        for i in range(self.n_downsample_global):
            x = ConvNormReLU(self.ngf * 2 ** (i + 1), 3, stride=2, padding=1, name=f"down{i}", **kw)(x, train)
        if self.attention is not None and attn_at == -1:  # no residual blocks: attend right after downsampling
            x = attend(x)
        block = nn.remat(ResnetBlock, static_argnums=(2,)) if self.remat_blocks else ResnetBlock
        for i in range(self.n_blocks_global):
            x = block(name=f"res{i}", **kw)(x, train)
            if self.attention is not None and i == attn_at:
                x = attend(x)
        for i in range(self.n_downsample_global):
            features = self.ngf * 2 ** (self.n_downsample_global - i - 1)
            x = UpNormReLU(features, upsample_impl=self.upsample_impl, upsample_layer=self.upsample_layer,
                           name=f"up{i}", **kw)(x, train)
        if not self.with_output:
            return x
        return OutputConv(self.output_nc, self.init_std, self.spectral_norm, self.dtype, self.conv_impl,
                          name="out")(with_skip(x, skip), train)


class LocalEnhancer(nn.Module):
    """G2..Gn: a GlobalGenerator trunk of width ngf*2**n_local_enhancers on the coarsest input, then
    one enhancer per doubling whose front-end features are summed with the coarser output.

    Submodules: `global_trunk`, and per enhancer n = 1..n_local_enhancers (1 = coarsest,
    n_local_enhancers = finest, as official `model{n}_1/_2`): `enh{n}_front`, `enh{n}_down`,
    `enh{n}_res{j}`, `enh{n}_up`; the finest ends with `out`.
    """

    output_nc: int = 3
    ngf: int = 32
    n_downsample_global: int = 4
    n_blocks_global: int = 9
    n_local_enhancers: int = 1
    n_blocks_local: int = 3
    norm: str = "instance"
    upsample_impl: str = "tapwise"
    remat_blocks: bool = False
    spectral_norm: bool = False
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    attention: Optional[AttentionConfig] = None  # in the global trunk's bottleneck
    attention_after_block: int = -1
    conv_impl: str = "auto"  # computational form of the convs ('auto' | 'rewrite' | 'lax'; conv_rewrites.py)
    output_skip_nc: int = 0  # as GlobalGenerator's, at the finest scale
    upsample_layer: str = "transpose"  # the layer of every upsampling unit, trunk and enhancers (layers.upsample_2x)

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        if self.n_local_enhancers < 1:
            raise ValueError(f"LocalEnhancer needs n_local_enhancers >= 1, got {self.n_local_enhancers}")
        check_divisible(x, 2 ** (self.n_downsample_global + self.n_local_enhancers), "LocalEnhancer")
        kw = dict(norm=self.norm, init_std=self.init_std, spectral_norm=self.spectral_norm, dtype=self.dtype,
                  conv_impl=self.conv_impl)
        # The official pyramid average-pools the one-hot + edge input itself (a blur, not nearest).
        pyramid = [x]
        for _ in range(self.n_local_enhancers):
            pyramid.append(avg_pool_3x3_s2(pyramid[-1]))
        out = GlobalGenerator(
            self.output_nc, self.ngf * 2**self.n_local_enhancers, self.n_downsample_global, self.n_blocks_global,
            self.norm, with_output=False, upsample_impl=self.upsample_impl, remat_blocks=self.remat_blocks,
            spectral_norm=self.spectral_norm, init_std=self.init_std, dtype=self.dtype, attention=self.attention,
            attention_after_block=self.attention_after_block, conv_impl=self.conv_impl, upsample_layer=self.upsample_layer, name="global_trunk",
        )(pyramid[-1], train)
        block = nn.remat(ResnetBlock, static_argnums=(2,)) if self.remat_blocks else ResnetBlock
        for n in range(1, self.n_local_enhancers + 1):
            width = self.ngf * 2 ** (self.n_local_enhancers - n)
            h = ConvNormReLU(width, 7, reflect=3, name=f"enh{n}_front", **kw)(pyramid[self.n_local_enhancers - n], train)
            h = ConvNormReLU(2 * width, 3, stride=2, padding=1, name=f"enh{n}_down", **kw)(h, train)
            h = h + out
            for j in range(self.n_blocks_local):
                h = block(name=f"enh{n}_res{j}", **kw)(h, train)
            out = UpNormReLU(width, upsample_impl=self.upsample_impl, upsample_layer=self.upsample_layer,
                             name=f"enh{n}_up", **kw)(h, train)
        return OutputConv(self.output_nc, self.init_std, self.spectral_norm, self.dtype, self.conv_impl,
                          name="out")(with_skip(out, x[..., x.shape[-1] - self.output_skip_nc:]), train)


def with_skip(features: Array, skip: Array) -> Array:
    """The output conv's input: the last feature map, then the skipped input channels if any."""
    return jnp.concatenate([features, skip.astype(features.dtype)], -1) if skip.shape[-1] else features


def check_divisible(x: Array, factor: int, what: str) -> None:
    """Raise if H or W is not a multiple of the network's total downsampling factor."""
    h, w = x.shape[1], x.shape[2]
    if h % factor or w % factor:
        raise ValueError(
            f"{what} input is {h}x{w} (HxW); both must be multiples of {factor} "
            f"(2**number of downsamplings), or the output size would not match. "
            f"Resize/crop to e.g. {h - h % factor or factor}x{w - w % factor or factor}."
        )
