"""PatchGAN discriminators and the multi-scale pyramid, returning every intermediate feature."""
from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from pix2pixhd_jax.models.attention import AttentionConfig, SelfAttention
from pix2pixhd_jax.models.layers import Array, LayerOptions, avg_pool_3x3_s2

# Official kw=4, padw=ceil((4-1)/2)=2: every D conv is 4x4 with zero padding 2.
_KERNEL, _PAD = 4, 2


class NLayerDiscriminator(LayerOptions):
    """PatchGAN: n_layers_D strided 4x4 convs, one stride-1 conv, a 1-channel score conv.

    Returns the list of n_layers_D + 2 outputs (features of every group, scores last); with
    get_interm_feat=False only [scores]. Submodules `layer{j}` mirror official `model{j}`.
    With `attention` set, a SelfAttention block `attn` follows layer `attention_after_layer`
    (its output replaces that layer's feature; beyond the paper, absent by default).
    """

    ndf: int = 64
    n_layers_D: int = 3
    _: dataclasses.KW_ONLY
    get_interm_feat: bool = True
    max_features: int = 512
    attention: Optional[AttentionConfig] = None
    attention_after_layer: int = 2

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> list[Array]:
        conv = lambda f, s, name: self.conv(f, _KERNEL, stride=s, padding=_PAD, name=name)
        if self.attention is not None and not 0 <= self.attention_after_layer <= self.n_layers_D:
            raise ValueError(f"model.d_attention_after_layer={self.attention_after_layer} is not a feature layer of a "
                             f"PatchGAN with n_layers_D={self.n_layers_D} (0..{self.n_layers_D})")

        def maybe_attend(j: int, x: Array) -> Array:
            if self.attention is None or j != self.attention_after_layer:
                return x
            return SelfAttention(self.attention, name="attn", **self.conv_options)(x, train)

        feats = []
        x = maybe_attend(0, nn.leaky_relu(conv(self.ndf, 2, "layer0")(x, train), 0.2))
        feats.append(x)
        nf = self.ndf
        for n in range(1, self.n_layers_D + 1):
            nf = min(nf * 2, self.max_features)
            stride = 2 if n < self.n_layers_D else 1
            x = conv(nf, stride, f"layer{n}")(x, train)
            x = nn.leaky_relu(self.norm_layer(f"layer{n}_norm")(x, train), 0.2)
            x = maybe_attend(n, x)
            feats.append(x)
        scores = conv(1, 1, f"layer{self.n_layers_D + 1}")(x, train).astype(jnp.float32)
        feats.append(scores)
        return feats if self.get_interm_feat else [scores]


class MultiscaleDiscriminator(LayerOptions):
    """num_D independent PatchGANs on the input average-pooled 0, 1, ... times.

    Output: list per scale, finest first, of each scale's feature list (scores last). As in the
    official code the finest scale is `scale{num_D-1}` and the coarsest `scale0`, so a pyramid
    grown from 2 to 3 scales keeps scale0/scale1 at the same absolute resolutions.
    `attention_scales` are pyramid positions (0 = finest input) whose PatchGAN gets a self-attention block.
    """

    ndf: int = 64
    n_layers_D: int = 3
    num_D: int = 3
    _: dataclasses.KW_ONLY
    get_interm_feat: bool = True
    attention: Optional[AttentionConfig] = None
    attention_scales: tuple[int, ...] = ()
    attention_after_layer: int = 2

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> list[list[Array]]:
        bad = [i for i in self.attention_scales if not 0 <= i < self.num_D]
        if bad:
            raise ValueError(f"model.d_attention_scales={tuple(self.attention_scales)}: scales {bad} do not exist with "
                             f"num_D={self.num_D} (0 = finest .. {self.num_D - 1} = coarsest)")
        results = []
        for i in range(self.num_D):
            use_attention = self.attention is not None and i in self.attention_scales
            d = NLayerDiscriminator(self.ndf, self.n_layers_D, get_interm_feat=self.get_interm_feat,
                                    attention=self.attention if use_attention else None,
                                    attention_after_layer=self.attention_after_layer,
                                    name=f"scale{self.num_D - 1 - i}", **self.layer_options)
            results.append(d(x, train))
            if i != self.num_D - 1:
                x = avg_pool_3x3_s2(x)
        return results
