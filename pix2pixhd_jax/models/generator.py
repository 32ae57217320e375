"""Coarse-to-fine generators: GlobalGenerator (G1) and LocalEnhancer (G2..Gn), NHWC."""
from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from pix2pixhd_jax.models.attention import AttentionConfig, SelfAttention
from pix2pixhd_jax.models.layers import (
    Array,
    ConvOptions,
    LayerOptions,
    NoiseInput,
    avg_pool_3x3_s2,
    reflect_pad,
    resnet_block,
)


class ConvNormReLU(LayerOptions):
    """[reflect pad] conv, norm, ReLU: the repeated unit of every official Sequential."""

    features: int
    kernel_size: int
    _: dataclasses.KW_ONLY
    stride: int = 1
    padding: int = 0
    reflect: int = 0

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        if self.reflect:
            x = reflect_pad(x, self.reflect)
        x = self.conv(self.features, self.kernel_size, stride=self.stride, padding=self.padding, name="conv")(x, train)
        return nn.relu(self.norm_layer("norm")(x, train))


class UpNormReLU(LayerOptions):
    """The layer that doubles H and W (official: a transposed conv; layers.upsample_2x), [noise], norm, ReLU."""

    features: int
    _: dataclasses.KW_ONLY
    noise: bool = False  # a NoiseInput `noise` after the upsampling (beyond the paper)

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = self.upsample(x, self.features, train)
        if self.noise:
            x = NoiseInput(name="noise")(x)
        return nn.relu(self.norm_layer("norm")(x, train))


class OutputConv(ConvOptions):
    """Reflect pad 3, 7x7 conv to the output channels, tanh."""

    features: int

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = self.conv(self.features, 7, name="conv")(reflect_pad(x, 3), train)
        # tanh in float32: the image range is what the losses compare.
        return jnp.tanh(x.astype(jnp.float32))


class GlobalGenerator(LayerOptions):
    """G1: 7x7 front end, strided downsampling, residual blocks, upsampling (official: transposed convs), 7x7 + tanh.

    Submodules: `front`, `down{i}`, `res{i}`, `up{i}`, `out` (absent when with_output=False: the
    trunk of a LocalEnhancer ends in the last upsampling unit, ngf channels at input resolution).
    With output_skip_nc = k > 0 (beyond the paper) `out` also sees the last k input channels (the
    pooled instance features), so a feature sets a region's colour through one conv instead of
    passing every normalised layer of the trunk.
    With `attention` set, a SelfAttention block `attn` sits in the bottleneck after residual block
    `attention_after_block` (-1 = after the last; beyond the paper, absent by default). With
    noise_inputs each `up{i}` adds scaled per-pixel noise after its upsampling (`up{i}/noise`).
    """

    output_nc: int = 3
    ngf: int = 64
    n_downsample_global: int = 4
    n_blocks_global: int = 9
    _: dataclasses.KW_ONLY
    with_output: bool = True
    remat_blocks: bool = False
    attention: Optional[AttentionConfig] = None
    attention_after_block: int = -1
    output_skip_nc: int = 0
    noise_inputs: bool = False  # a NoiseInput after every upsampling layer (beyond the paper)

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        check_divisible(x, 2**self.n_downsample_global, "GlobalGenerator")
        skip = x[..., x.shape[-1] - self.output_skip_nc:]
        attn_at = self.n_blocks_global - 1 if self.attention_after_block == -1 else self.attention_after_block
        if self.attention is not None and not (0 <= attn_at < self.n_blocks_global or attn_at == -1):
            raise ValueError(f"model.g_attention_after_block={self.attention_after_block} is not a residual block of "
                             f"G1 with n_blocks_global={self.n_blocks_global} (0..{self.n_blocks_global - 1}, or -1)")
        attend = lambda x: SelfAttention(self.attention, name="attn", **self.conv_options)(x, train)
        x = ConvNormReLU(self.ngf, 7, reflect=3, name="front", **self.layer_options)(x, train)
        for i in range(self.n_downsample_global):
            x = ConvNormReLU(self.ngf * 2 ** (i + 1), 3, stride=2, padding=1, name=f"down{i}",
                             **self.layer_options)(x, train)
        if self.attention is not None and attn_at == -1:  # no residual blocks: attend right after downsampling
            x = attend(x)
        block = resnet_block(self.remat_blocks)
        for i in range(self.n_blocks_global):
            x = block(name=f"res{i}", **self.layer_options)(x, train)
            if self.attention is not None and i == attn_at:
                x = attend(x)
        for i in range(self.n_downsample_global):
            features = self.ngf * 2 ** (self.n_downsample_global - i - 1)
            x = UpNormReLU(features, noise=self.noise_inputs, name=f"up{i}", **self.layer_options)(x, train)
        if not self.with_output:
            return x
        return OutputConv(self.output_nc, name="out", **self.conv_options)(with_skip(x, skip), train)


class LocalEnhancer(LayerOptions):
    """G2..Gn: a GlobalGenerator trunk of width ngf*2**n_local_enhancers on the coarsest input, then
    one enhancer per doubling whose front-end features are summed with the coarser output.

    Submodules: `global_trunk`, and per enhancer n = 1..n_local_enhancers (1 = coarsest,
    n_local_enhancers = finest, as official `model{n}_1/_2`): `enh{n}_front`, `enh{n}_down`,
    `enh{n}_res{j}`, `enh{n}_up`; the finest ends with `out`. The layer options (upsample_layer
    included) hold for the trunk and the enhancers alike.
    """

    output_nc: int = 3
    ngf: int = 32
    n_downsample_global: int = 4
    n_blocks_global: int = 9
    n_local_enhancers: int = 1
    n_blocks_local: int = 3
    _: dataclasses.KW_ONLY
    remat_blocks: bool = False
    attention: Optional[AttentionConfig] = None  # in the global trunk's bottleneck
    attention_after_block: int = -1
    output_skip_nc: int = 0  # as GlobalGenerator's, at the finest scale
    noise_inputs: bool = False  # as GlobalGenerator's, in the trunk and every enhancer

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        if self.n_local_enhancers < 1:
            raise ValueError(f"LocalEnhancer needs n_local_enhancers >= 1, got {self.n_local_enhancers}")
        check_divisible(x, 2 ** (self.n_downsample_global + self.n_local_enhancers), "LocalEnhancer")
        # The official pyramid average-pools the one-hot + edge input itself (a blur, not nearest).
        pyramid = [x]
        for _ in range(self.n_local_enhancers):
            pyramid.append(avg_pool_3x3_s2(pyramid[-1]))
        out = GlobalGenerator(
            self.output_nc, self.ngf * 2**self.n_local_enhancers, self.n_downsample_global, self.n_blocks_global,
            with_output=False, remat_blocks=self.remat_blocks, attention=self.attention,
            attention_after_block=self.attention_after_block, noise_inputs=self.noise_inputs, name="global_trunk",
            **self.layer_options,
        )(pyramid[-1], train)
        block = resnet_block(self.remat_blocks)
        for n in range(1, self.n_local_enhancers + 1):
            width = self.ngf * 2 ** (self.n_local_enhancers - n)
            h = ConvNormReLU(width, 7, reflect=3, name=f"enh{n}_front", **self.layer_options)(
                pyramid[self.n_local_enhancers - n], train)
            h = ConvNormReLU(2 * width, 3, stride=2, padding=1, name=f"enh{n}_down", **self.layer_options)(h, train)
            h = h + out
            for j in range(self.n_blocks_local):
                h = block(name=f"enh{n}_res{j}", **self.layer_options)(h, train)
            out = UpNormReLU(width, noise=self.noise_inputs, name=f"enh{n}_up", **self.layer_options)(h, train)
        return OutputConv(self.output_nc, name="out", **self.conv_options)(
            with_skip(out, x[..., x.shape[-1] - self.output_skip_nc:]), train)


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
