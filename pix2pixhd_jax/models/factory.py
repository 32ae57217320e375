"""Build the networks of a config: the one place that maps config keys to module arguments."""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from pix2pixhd_jax.models.attention import AttentionConfig
from pix2pixhd_jax.models.discriminator import MultiscaleDiscriminator
from pix2pixhd_jax.models.encoder import Encoder
from pix2pixhd_jax.models.generator import GlobalGenerator, LocalEnhancer
from pix2pixhd_jax.semantics import input_channels

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(model_cfg: ml_collections.ConfigDict):
    if model_cfg.compute_dtype not in DTYPES:
        raise ValueError(f"model.compute_dtype={model_cfg.compute_dtype!r} is not one of {sorted(DTYPES)}")
    return DTYPES[model_cfg.compute_dtype]


def uses_features(model_cfg: ml_collections.ConfigDict) -> bool:
    """G is conditioned on pooled encoder features (instance_feat or label_feat)."""
    return bool(model_cfg.instance_feat or model_cfg.label_feat)


def generator_input_nc(model_cfg: ml_collections.ConfigDict) -> int:
    return input_channels(label_nc=model_cfg.label_nc, input_nc=model_cfg.input_nc, use_instance=model_cfg.use_instance,
                          feat_num=model_cfg.feat_num if uses_features(model_cfg) else 0)


def discriminator_input_nc(model_cfg: ml_collections.ConfigDict) -> int:
    """D sees the label encoding (never the features) concatenated with the image."""
    return input_channels(label_nc=model_cfg.label_nc, input_nc=model_cfg.input_nc,
                          use_instance=model_cfg.use_instance) + model_cfg.output_nc


def downsample_factor(model_cfg: ml_collections.ConfigDict) -> int:
    """H and W of G's input must be multiples of this."""
    n_local = model_cfg.n_local_enhancers if model_cfg.netG == "local" else 0
    return 2 ** (model_cfg.n_downsample_global + n_local)


def attention_config(model_cfg: ml_collections.ConfigDict) -> AttentionConfig:
    """The self-attention block shape shared by G and D (beyond the paper; keys absent in old configs)."""
    get = lambda key, default: model_cfg.get(key, default)
    return AttentionConfig(form=get("attention_form", "full"), pool=get("attention_pool", 4),
                           window=get("attention_window", 16), reduction=get("attention_reduction", 8))


def make_generator(model_cfg: ml_collections.ConfigDict):
    attention = attention_config(model_cfg) if model_cfg.get("g_attention", False) else None
    common = dict(output_nc=model_cfg.output_nc, ngf=model_cfg.ngf, n_downsample_global=model_cfg.n_downsample_global,
                  n_blocks_global=model_cfg.n_blocks_global, norm=model_cfg.norm, upsample_impl=model_cfg.upsample_impl,
                  remat_blocks=model_cfg.remat_blocks, spectral_norm=model_cfg.spectral_norm_G,
                  init_std=model_cfg.init_std, dtype=compute_dtype(model_cfg), attention=attention,
                  attention_after_block=model_cfg.get("g_attention_after_block", -1))
    if model_cfg.netG == "global":
        return GlobalGenerator(**common)
    if model_cfg.netG == "local":
        return LocalEnhancer(n_local_enhancers=model_cfg.n_local_enhancers, n_blocks_local=model_cfg.n_blocks_local,
                             **common)
    raise ValueError(f"model.netG={model_cfg.netG!r} is not 'global' or 'local'")


def make_discriminator(model_cfg: ml_collections.ConfigDict, loss_cfg: ml_collections.ConfigDict):
    # As in the official code, dropping feature matching also drops D's intermediate outputs.
    scales = tuple(int(i) for i in model_cfg.get("d_attention_scales", ()))
    return MultiscaleDiscriminator(ndf=model_cfg.ndf, n_layers_D=model_cfg.n_layers_D, num_D=model_cfg.num_D,
                                   norm=model_cfg.norm, get_interm_feat=not loss_cfg.no_ganFeat_loss,
                                   spectral_norm=model_cfg.spectral_norm_D, init_std=model_cfg.init_std,
                                   dtype=compute_dtype(model_cfg),
                                   attention=attention_config(model_cfg) if scales else None, attention_scales=scales,
                                   attention_after_layer=model_cfg.get("d_attention_after_layer", 2))


def make_encoder(model_cfg: ml_collections.ConfigDict):
    return Encoder(feat_num=model_cfg.feat_num, nef=model_cfg.nef, n_downsample_E=model_cfg.n_downsample_E,
                   norm=model_cfg.norm, upsample_impl=model_cfg.upsample_impl, init_std=model_cfg.init_std,
                   dtype=compute_dtype(model_cfg))
