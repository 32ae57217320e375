"""pix2pixHD objectives as pure, keyword-only functions over the discriminator's output lists.

A discriminator output is a list per scale (finest first) of that scale's feature maps with the
patch scores last, as returned by MultiscaleDiscriminator.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from pix2pixhd_jax.choices import GAN_LOSSES, LATTICE_REFERENCES, LATTICE_SIDES
from pix2pixhd_jax.lattice_geometry import lattice_bins, neighbour_bins
from pix2pixhd_jax.semantics import instance_average_pool, region_sizes

Array = jax.Array
DOutput = Sequence[Sequence[Array]]

# Official VGGLoss weights for relu1_1 .. relu5_1.
VGG_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


@dataclasses.dataclass(frozen=True)
class LossOptions:
    """What the train step reads from config.loss, read once (static: hashable, no arrays)."""

    gan_mode: str  # one of GAN_LOSSES
    no_ganFeat_loss: bool  # pix2pixHD's option names
    no_vgg_loss: bool
    lambda_feat: float
    vgg_layer_weights: tuple[float, ...]
    lambda_l1: float  # the terms below are off at 0
    lambda_lattice: float
    lattice_period: int
    lattice_reference: str  # one of LATTICE_REFERENCES
    lattice_margin: float
    lattice_sides: str  # one of LATTICE_SIDES
    lambda_region_colour: float
    lambda_feature_colour: float
    r1_gamma: float
    r1_every: int

    @classmethod
    def from_config(cls, loss_cfg: Any) -> "LossOptions":
        return cls(gan_mode=loss_cfg.gan_mode, no_ganFeat_loss=bool(loss_cfg.no_ganFeat_loss),
                   no_vgg_loss=bool(loss_cfg.no_vgg_loss), lambda_feat=float(loss_cfg.lambda_feat),
                   vgg_layer_weights=tuple(float(w) for w in loss_cfg.vgg_layer_weights),
                   lambda_l1=float(loss_cfg.lambda_l1), lambda_lattice=float(loss_cfg.lambda_lattice),
                   lattice_period=int(loss_cfg.lattice_period), lattice_reference=str(loss_cfg.lattice_reference),
                   lattice_margin=float(loss_cfg.lattice_margin), lattice_sides=str(loss_cfg.lattice_sides),
                   lambda_region_colour=float(loss_cfg.lambda_region_colour),
                   lambda_feature_colour=float(loss_cfg.lambda_feature_colour), r1_gamma=float(loss_cfg.r1_gamma),
                   r1_every=int(loss_cfg.r1_every))


def _scores(d_out: DOutput) -> list[Array]:
    return [scale[-1].astype(jnp.float32) for scale in d_out]


def gan_loss(d_out: DOutput, *, target_is_real: bool, loss_type: str = "lsgan", for_discriminator: bool = True) -> Array:
    """Adversarial loss summed over scales (not averaged, as in the official GANLoss).

    lsgan: mean (s - t)^2 with t = 1/0. vanilla: binary cross-entropy on logits (the official code
    drops D's sigmoid when features are returned; logits are the correct form). hinge: D gets
    mean relu(1 - s) / relu(1 + s), G gets -mean s (for_discriminator=False).
    """
    total = jnp.float32(0.0)
    for s in _scores(d_out):
        if loss_type == "lsgan":
            total += jnp.mean(jnp.square(s - (1.0 if target_is_real else 0.0)))
        elif loss_type == "vanilla":
            total += jnp.mean(jax.nn.softplus(-s) if target_is_real else jax.nn.softplus(s))
        elif loss_type == "hinge":
            if for_discriminator:
                total += jnp.mean(jax.nn.relu(1.0 - s) if target_is_real else jax.nn.relu(1.0 + s))
            else:
                if not target_is_real:
                    raise ValueError("the hinge generator loss only exists for target_is_real=True")
                total += -jnp.mean(s)
        else:
            raise ValueError(f"loss_type {loss_type!r} is not one of {GAN_LOSSES}")
    return total


def feature_matching_loss(fake_out: DOutput, real_out: DOutput, *, n_layers_D: int, num_D: int,
                          lambda_feat: float) -> Array:
    """L1 between D features of fake and stop-gradient real, every layer but the scores, all scales.

    Weight per term: 4/(n_layers_D+1) * 1/num_D * lambda_feat (official loss_G_GAN_Feat).
    """
    weight = 4.0 / (n_layers_D + 1) * (1.0 / num_D) * lambda_feat
    total = jnp.float32(0.0)
    for fake_scale, real_scale in zip(fake_out, real_out):
        for f, r in zip(fake_scale[:-1], real_scale[:-1]):
            r = jax.lax.stop_gradient(r)
            total += weight * jnp.mean(jnp.abs(f.astype(jnp.float32) - r.astype(jnp.float32)))
    return total


def perceptual_loss(vgg_apply: Callable[..., Sequence[Array]], vgg_variables, fake: Array, real: Array, *,
                    layer_weights: Sequence[float] = VGG_LAYER_WEIGHTS, lambda_feat: float) -> Array:
    """lambda_feat * sum_i w_i * L1(vgg(fake)_i, stop_gradient(vgg(real)_i)).

    The frozen network arrives as (apply function, variables) arguments so its weights are never
    compiled in as constants. Images in [-1, 1], fed as the official code does.
    """
    # Two passes, as the official code does: one batched pass over fake and real would run the
    # backward pass over the real half too (its cotangent is zero, but the convs do not know).
    vgg_variables = jax.lax.stop_gradient(vgg_variables)
    fake_feats = vgg_apply(vgg_variables, fake)
    real_feats = vgg_apply(vgg_variables, jax.lax.stop_gradient(real))
    if len(fake_feats) != len(layer_weights):
        raise ValueError(f"{len(fake_feats)} VGG taps but {len(layer_weights)} layer weights")
    total = jnp.float32(0.0)
    for w, f, r in zip(layer_weights, fake_feats, real_feats):
        total += w * jnp.mean(jnp.abs(f.astype(jnp.float32) - jax.lax.stop_gradient(r).astype(jnp.float32)))
    return lambda_feat * total


def pixel_l1_loss(fake: Array, real: Array, *, weight: float) -> Array:
    """weight * mean |fake - real| over pixels and channels (pix2pix's reconstruction term)."""
    return weight * jnp.mean(jnp.abs(fake.astype(jnp.float32) - jax.lax.stop_gradient(real).astype(jnp.float32)))


def lattice_loss(fake: Array, real: Array, *, period: int, weight: float) -> Array:
    """weight * mean over images and lattice bins of max(0, log P_fake - log P_real) (beyond the paper).

    P: power spectrum (orthonormal FFT, summed over channels, per-image mean removed) at the bins
    (a*H/period, b*W/period), DC left out, where a `period`-pixel grid puts all its energy and where
    the strided upsampling of G leaves its lattice (evaluation/lattice.py measures the same bins
    against their neighbours). Only power above the real photo's counts, so real detail at those
    frequencies is not pushed away; a spectral penalty as in Durall et al. 2020.
    """
    h, w = fake.shape[1:3]
    if h % period or w % period:
        raise ValueError(f"loss.lattice_period={period} must divide the image size {h}x{w}")
    rows = (jnp.arange(period) * (h // period))[:, None]
    cols = (jnp.arange(period) * (w // period))[None, :]
    not_dc = (jnp.arange(period)[:, None] + jnp.arange(period)[None, :]) > 0

    def power(x: Array) -> Array:
        x = x.astype(jnp.float32)
        x = x - x.mean(axis=(1, 2), keepdims=True)
        return (jnp.abs(jnp.fft.fft2(x, axes=(1, 2), norm="ortho")) ** 2).sum(-1)  # (B, H, W)

    real_power = jax.lax.stop_gradient(power(real))
    # Bins below 1% of the real image's mean power per bin compare as equal: the log of two
    # negligible powers would otherwise weigh as much as a visible grid.
    eps = 0.01 * real_power.mean(axis=(1, 2), keepdims=True)
    excess = jnp.log(power(fake)[:, rows, cols] + eps) - jnp.log(real_power[:, rows, cols] + eps)
    return weight * jnp.sum(jnp.maximum(excess, 0.0) * not_dc) / (fake.shape[0] * (period * period - 1))


def periodic_power(x: Array) -> Array:
    """(B, H, W) power spectrum of the periodic component of (B, H, W, C) images, summed over channels.

    The jnp twin of evaluation/lattice.power_spectrum (Moisan's periodic plus smooth decomposition,
    unnormalised FFT, DC set to 0), so the loss sees the spectrum the figure measures. The border
    jumps v sit on four lines, so their FFT is written in closed form: column FFTs of the row jump
    times (1 - e^{2 pi i k/H}), plus the same with rows and columns swapped.
    """
    x = x.astype(jnp.float32)
    h, w = x.shape[1:3]
    row_jump = jnp.fft.fft(x[:, -1] - x[:, 0], axis=1)  # (B, W, C): last row minus first row
    col_jump = jnp.fft.fft(x[:, :, -1] - x[:, :, 0], axis=1)  # (B, H, C)
    ky, kx = 2 * jnp.pi * jnp.arange(h) / h, 2 * jnp.pi * jnp.arange(w) / w
    jumps = ((1 - jnp.exp(1j * ky))[None, :, None, None] * row_jump[:, None]
             + (1 - jnp.exp(1j * kx))[None, None, :, None] * col_jump[:, :, None])
    denom = (2 * jnp.cos(ky)[:, None] + 2 * jnp.cos(kx)[None, :] - 4).at[0, 0].set(1.0)  # the mean: s has none
    spectrum = jnp.fft.fft2(x, axes=(1, 2)) - jumps / denom[None, :, :, None]
    return (jnp.abs(spectrum) ** 2).sum(-1).at[:, 0, 0].set(0.0)


def lattice_neighbour_loss(fake: Array, *, period: int, weight: float, margin: float, sides: str = "above") -> Array:
    """weight * mean over images and over `period` and period/2 of max(0, log(lattice ratio) - log margin).

    sides='both' takes |log(lattice ratio)| instead: a figure below 1/margin (a notch, less power
    at the lattice than around it, as a blocky nearest-like upsampling leaves) is pushed back up.

    Self-referenced (beyond the paper): the lattice ratio is the evaluation's figure of each fake
    image alone (evaluation/lattice.py: power at the lattice bins over the power of their
    neighbours in the same image, lattice_geometry), with the neighbours' power held fixed
    (stop_gradient). So only power a grid adds above its surroundings is pushed down, and the
    hinge stops at `margin` times the surroundings. (Trained, G still overshoots into a notch,
    less power at the lattice than around it; sides='both' pushes back: benchmarks/RESULTS.md.) The
    ratio is taken over all the lattice's bins at once: the power at one bin of one image is a
    noisy draw (a real photo's single bin exceeds 1.1x its neighbours a third of the time), so a
    per-bin hinge would push a grid-free spectrum below its surroundings too. The half period
    (the 4-pixel grid inside the 8-pixel one) is scored separately, as its bins carry little of
    the whole lattice's power.
    """
    h, w = fake.shape[1:3]
    if h % period or w % period:
        raise ValueError(f"loss.lattice_period={period} must divide the image size {h}x{w}")
    if sides not in LATTICE_SIDES:
        raise ValueError(f"loss.lattice_sides={sides!r} is not one of {LATTICE_SIDES}")
    power = periodic_power(fake)
    total = jnp.float32(0.0)
    periods = [p for p in (period, period // 2) if p >= 2 and h % p == 0 and w % p == 0]
    for p in periods:
        bins = lattice_bins(h, w, p)
        rows, cols, keep = neighbour_bins(h, w, p)
        around = jnp.where(keep, power[:, rows, cols], 0.0).sum(-1) / keep.sum(1).clip(1)
        # The figure's floor: a bin set holding a billionth of the image's mean power per bin is empty.
        eps = jax.lax.stop_gradient(1e-9 * len(bins) * power.mean(axis=(1, 2)) + 1e-30)
        ratio = (power[:, bins[:, 0], bins[:, 1]].sum(-1) + eps) / (jax.lax.stop_gradient(around.sum(-1)) + eps)
        log_ratio = jnp.log(ratio) if sides == "above" else jnp.abs(jnp.log(ratio))
        total += jnp.mean(jnp.maximum(log_ratio - jnp.log(margin), 0.0))
    return weight * total / len(periods)


def _per_region_l1(a: Array, b: Array, regions: Array) -> Array:
    """Mean over samples of the mean over regions of mean |a - b|, with a and b constant per region.

    a, b: (B, H, W, C) maps holding one value per region of `regions` (B, H, W). Each region counts
    once, so small objects weigh as much as the sky.
    """
    sizes = region_sizes(regions)
    diff = jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)).mean(-1)
    # Every pixel of a region holds the region's value: dividing by its size counts it once.
    return jnp.mean(jnp.sum(diff / sizes, axis=(1, 2)) / jnp.sum(1.0 / sizes, axis=(1, 2)))


def region_colour_loss(fake: Array, real: Array, regions: Array, *, weight: float) -> Array:
    """weight * L1 between the mean colours of fake and real inside each region, every region alike.

    regions: (B, H, W) ids, the map E pools over. A region's mean colour is the part of its look a
    pooled feature can carry, so the term asks G to render what E encodes; with only the
    adversarial and perceptual terms tying colour to the photo, G learns to use the features far
    more slowly than a CPU-sized budget allows.
    """
    pooled_real = jax.lax.stop_gradient(instance_average_pool(real.astype(jnp.float32), regions))
    return weight * _per_region_l1(instance_average_pool(fake.astype(jnp.float32), regions), pooled_real, regions)


def feature_colour_loss(features: Array, real: Array, regions: Array, *, weight: float) -> Array:
    """weight * L1 between E's first three pooled feature channels and each region's mean real colour.

    Anchors three of E's channels to the region's colour (both in [-1, 1]): the feature clusters
    of a class then span its real colours and a colour can be chosen directly as a feature vector.
    Channels beyond the third stay free for what colour does not say (texture, shading).
    """
    if features.shape[-1] < 3:
        raise ValueError(f"the feature-colour anchor needs feat_num >= 3, got {features.shape[-1]}")
    pooled_real = jax.lax.stop_gradient(instance_average_pool(real.astype(jnp.float32), regions))
    return weight * _per_region_l1(features[..., :3], pooled_real, regions)


def discriminator_loss(fake_out: DOutput, real_out: DOutput, *, loss_type: str = "lsgan") -> Array:
    """0.5 * (loss on fake as fake + loss on real as real), the official loss_D."""
    return 0.5 * (gan_loss(fake_out, target_is_real=False, loss_type=loss_type)
                  + gan_loss(real_out, target_is_real=True, loss_type=loss_type))


def r1_penalty(d_apply: Callable[[Array], DOutput], real: Array, *, gamma: float) -> Array:
    """R1 (Mescheder et al. 2018): gamma/2 * E_b ||d score_b / d real_b||^2 on real images.

    score_b reduces D's patch scores as the adversarial losses do: mean over the patches of a
    scale, summed over scales. The gradient is taken w.r.t. the image only (not the label
    channels); d_apply maps images (B, H, W, C) to D's output lists. Per-sample gradients come
    from one backward pass of the batch sum, exact while D treats samples independently
    (instance norm; with batch norm the batch statistics couple them).
    """
    def total_score(x: Array) -> Array:
        return sum(jnp.sum(jnp.mean(s, axis=tuple(range(1, s.ndim)))) for s in _scores(d_apply(x)))

    grad = jax.grad(total_score)(real).astype(jnp.float32)
    return 0.5 * gamma * jnp.mean(jnp.sum(jnp.square(grad), axis=tuple(range(1, grad.ndim))))
