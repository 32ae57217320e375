"""Flax (linen) networks of pix2pixHD; NHWC, PyTorch-identical semantics."""
from pix2pixhd_jax.models.discriminator import MultiscaleDiscriminator, NLayerDiscriminator
from pix2pixhd_jax.models.encoder import Encoder
from pix2pixhd_jax.models.generator import GlobalGenerator, LocalEnhancer

__all__ = ["GlobalGenerator", "LocalEnhancer", "MultiscaleDiscriminator", "NLayerDiscriminator", "Encoder"]
