"""Encoder E: per-pixel low-dimensional features of the real image, averaged inside each instance."""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from pix2pixhd_jax.models.generator import GlobalGenerator, OutputConv
from pix2pixhd_jax.models.layers import Array, LayerOptions
from pix2pixhd_jax.semantics import instance_average_pool


class Encoder(LayerOptions):
    """Global-generator shape without residual blocks (nef, n_downsample_E, feat_num out, tanh),
    followed by instance-wise average pooling. Submodule `net` holds front/down/up/out.

    With image_skip (beyond the paper) the output conv `out` sits outside `net` and sees the input
    photo beside the upsampled features: instance norm in every layer of `net` removes each image's
    mean and scale, so without the photo E cannot tell a white car in a bright scene from a grey
    one in a dark scene, and its features end up relative rather than absolute colour.
    """

    feat_num: int = 3
    nef: int = 16
    n_downsample_E: int = 4
    _: dataclasses.KW_ONLY
    image_skip: bool = False

    @nn.compact
    def __call__(self, image: Array, inst: Array, train: bool = False) -> Array:
        """image: (B, H, W, C) in [-1, 1]; inst: (B, H, W) or (B, H, W, 1) ids -> (B, H, W, feat_num)."""
        if inst.ndim == 4:
            inst = inst[..., 0]
        feats = GlobalGenerator(self.feat_num, self.nef, self.n_downsample_E, 0, with_output=not self.image_skip,
                                name="net", **self.layer_options)(image, train)
        if self.image_skip:
            feats = OutputConv(self.feat_num, name="out", **self.conv_options)(
                jnp.concatenate([feats, image.astype(feats.dtype)], -1), train)
        return instance_average_pool(feats, inst)
