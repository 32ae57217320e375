"""Build the networks of a config and run them: the one place that maps config keys to modules.

`build(config)` gives the (static) modules; `generate` is the one forward of G (with E's pooled
features when the model uses them) shared by the train step, sample grids, evaluation, inference
and export; `encode` is E alone (feature banks).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from pix2pixhd_jax.choices import COMPUTE_DTYPES, GENERATORS
from pix2pixhd_jax.models.attention import AttentionConfig
from pix2pixhd_jax.models.discriminator import MultiscaleDiscriminator
from pix2pixhd_jax.models.encoder import Encoder
from pix2pixhd_jax.models.generator import GlobalGenerator, LocalEnhancer
from pix2pixhd_jax.semantics import encode_input, input_channels

DTYPES = {name: getattr(jnp, name) for name in COMPUTE_DTYPES}  # jnp.float32, jnp.bfloat16


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
    """The self-attention block shape shared by G and D (beyond the paper)."""
    return AttentionConfig(form=model_cfg.attention_form, pool=model_cfg.attention_pool,
                           window=model_cfg.attention_window, reduction=model_cfg.attention_reduction)


def layer_options(model_cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """The layers.LayerOptions fields G, D and E share, read from the config once (spectral norm off;
    G and D switch it on by their own key, E never has it)."""
    return dict(norm=model_cfg.norm, init_std=model_cfg.init_std, dtype=compute_dtype(model_cfg),
                conv_impl=model_cfg.conv_impl, upsample_impl=model_cfg.upsample_impl,
                upsample_layer=model_cfg.upsample_layer)


def make_generator(model_cfg: ml_collections.ConfigDict, *, options: Optional[dict[str, Any]] = None) -> nn.Module:
    """G1 ('global') or G1 trunk + local enhancers ('local'); options: layer_options(model_cfg) if None."""
    options = dict(options or layer_options(model_cfg), spectral_norm=model_cfg.spectral_norm_G)
    shape = dict(output_nc=model_cfg.output_nc, ngf=model_cfg.ngf, n_downsample_global=model_cfg.n_downsample_global,
                 n_blocks_global=model_cfg.n_blocks_global, remat_blocks=model_cfg.remat_blocks,
                 attention=attention_config(model_cfg) if model_cfg.g_attention else None,
                 attention_after_block=model_cfg.g_attention_after_block, noise_inputs=model_cfg.noise_inputs,
                 output_skip_nc=model_cfg.feat_num if uses_features(model_cfg) and model_cfg.feature_skip_G else 0)
    if model_cfg.netG == "global":
        return GlobalGenerator(**shape, **options)
    if model_cfg.netG == "local":
        return LocalEnhancer(n_local_enhancers=model_cfg.n_local_enhancers, n_blocks_local=model_cfg.n_blocks_local,
                             **shape, **options)
    raise ValueError(f"model.netG={model_cfg.netG!r} is not one of {GENERATORS}")


def make_discriminator(model_cfg: ml_collections.ConfigDict, loss_cfg: ml_collections.ConfigDict,
                       *, options: Optional[dict[str, Any]] = None) -> nn.Module:
    """The multi-scale PatchGAN D; options: layer_options(model_cfg) if None."""
    options = dict(options or layer_options(model_cfg), spectral_norm=model_cfg.spectral_norm_D)
    # As in the official code, dropping feature matching also drops D's intermediate outputs.
    scales = tuple(int(i) for i in model_cfg.d_attention_scales)
    return MultiscaleDiscriminator(model_cfg.ndf, model_cfg.n_layers_D, model_cfg.num_D,
                                   get_interm_feat=not loss_cfg.no_ganFeat_loss,
                                   attention=attention_config(model_cfg) if scales else None, attention_scales=scales,
                                   attention_after_layer=model_cfg.d_attention_after_layer, **options)


def make_encoder(model_cfg: ml_collections.ConfigDict, *, options: Optional[dict[str, Any]] = None) -> nn.Module:
    """E (no spectral norm, as official); options: layer_options(model_cfg) if None."""
    return Encoder(model_cfg.feat_num, model_cfg.nef, model_cfg.n_downsample_E,
                   image_skip=model_cfg.encoder_image_skip, **(options or layer_options(model_cfg)))


# ------------------------------------------------------------------------------------ networks
@dataclasses.dataclass(frozen=True)
class Networks:
    """The modules of a config (static: hashable, no arrays)."""

    generator: nn.Module
    discriminator: nn.Module
    encoder: Optional[nn.Module]
    vgg: Optional[nn.Module]


def build(config: ml_collections.ConfigDict, vgg: Optional[nn.Module] = None) -> Networks:
    """G, multi-scale D, E (when G is conditioned on features) and the given VGG, from one set of layer options."""
    options = layer_options(config.model)
    encoder = make_encoder(config.model, options=options) if uses_features(config.model) else None
    return Networks(make_generator(config.model, options=options),
                    make_discriminator(config.model, config.loss, options=options), encoder, vgg)


def apply(module: nn.Module, params: Any, collections: dict, *args, train: bool,
          rngs: Optional[dict[str, jax.Array]] = None) -> tuple[Any, dict]:
    """module.apply that returns (output, updated collections); collections untouched in eval."""
    variables = {"params": params, **collections}
    if train and collections:
        out, updates = module.apply(variables, *args, train, mutable=list(collections), rngs=rngs)
        return out, {**collections, **updates}
    return module.apply(variables, *args, train, rngs=rngs), collections


def init_generator_variables(nets: Networks, model_cfg: ml_collections.ConfigDict, rng_g: jax.Array,
                             rng_e: jax.Array, *, height: int, width: int) -> dict:
    """{'generator': variables, 'encoder': variables?} for images of height x width."""
    variables = {"generator": nets.generator.init(rng_g, jnp.zeros((1, height, width, generator_input_nc(model_cfg))))}
    if nets.encoder is not None:
        variables["encoder"] = nets.encoder.init(rng_e, jnp.zeros((1, height, width, model_cfg.output_nc)),
                                                 jnp.zeros((1, height, width), jnp.int32))
    return variables


def init_discriminator_variables(nets: Networks, model_cfg: ml_collections.ConfigDict, rng: jax.Array, *,
                                 height: int, width: int) -> dict:
    return nets.discriminator.init(rng, jnp.zeros((1, height, width, discriminator_input_nc(model_cfg))))


# ------------------------------------------------------------------------------------- forward
def label_encoding(batch: dict, model_cfg: ml_collections.ConfigDict) -> jax.Array:
    """One-hot (or RGB) label + edge map: the conditioning shared by G and D."""
    return encode_input(batch["label"], batch.get("inst"), label_nc=model_cfg.label_nc,
                        use_instance=model_cfg.use_instance, dtype=compute_dtype(model_cfg))


def pool_ids(model_cfg: ml_collections.ConfigDict, label: Any, inst: Optional[Any]) -> Any:
    """The map E pools over: label regions (label_feat) or instances (instance_feat); numpy or JAX arrays."""
    if model_cfg.label_feat:
        return label
    if inst is None:
        raise ValueError("model.instance_feat pools over instances: an instance map is required")
    return inst


def encode(nets: Networks, g_params: Any, g_collections: dict, image: jax.Array, pool: jax.Array, *,
           train: bool = False) -> tuple[jax.Array, dict]:
    """E on real images, average-pooled inside each region of `pool`: (B, H, W, feat_num) and E's collections."""
    return apply(nets.encoder, g_params["encoder"], g_collections["encoder"], image, pool, train=train)


def generate(nets: Networks, model_cfg: ml_collections.ConfigDict, g_params: Any, g_collections: dict, batch: dict,
             label_enc: jax.Array, *, train: bool, features: Optional[jax.Array] = None,
             noise_rng: Optional[jax.Array] = None) -> tuple[jax.Array, dict]:
    """Fake image in [-1, 1] and updated G (+E) collections.

    A model conditioned on features takes them from `features` (a ready per-pixel map: feature
    bank draws at inference) or, when None, from E on batch['image'] (training, samples, evaluation).
    With model.noise_inputs, `noise_rng` draws G's noise (training); None gives the fixed draw.
    """
    new_collections = dict(g_collections)
    g_in = label_enc
    if nets.encoder is not None:
        if features is None:
            features, new_collections["encoder"] = encode(nets, g_params, g_collections, batch["image"],
                                                          pool_ids(model_cfg, batch["label"], batch.get("inst")),
                                                          train=train)
        g_in = jnp.concatenate([g_in, features.astype(g_in.dtype)], axis=-1)
    fake, new_collections["generator"] = apply(nets.generator, g_params["generator"], g_collections["generator"],
                                               g_in, train=train, rngs=None if noise_rng is None else {"noise": noise_rng})
    return fake, new_collections


def make_generate_fn(config: ml_collections.ConfigDict, nets: Networks) -> Callable:
    """sample(g_params, g_collections, batch) -> fake images in [-1, 1] (eval mode), ready for jit."""

    def sample(g_params: Any, g_collections: dict, batch: dict) -> jax.Array:
        fake, _ = generate(nets, config.model, g_params, g_collections, batch,
                           label_encoding(batch, config.model), train=False)
        return fake

    return sample
