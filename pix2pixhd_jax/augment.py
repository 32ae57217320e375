"""DiffAugment-style differentiable augmentation of the discriminator's inputs (Zhao et al. 2020).

Beyond the paper; off unless `config.augment.policy` names ops. Every step draws one transform per
sample and applies it to BOTH the real and the fake D input, and to G's adversarial and feature-
matching terms as well as D's loss, so D never sees an augmentation the other side lacks and G
is not pushed to reproduce the augmentations. Ops (DiffAugment's ranges, images in [-1, 1]):
  color        brightness + U(-0.5, 0.5); saturation x U(0, 2) around the pixel's channel mean;
               contrast x U(0.5, 1.5) around the image mean. Image only.
  translation  integer shift by up to translation_ratio of H and W, zero fill. The label one-hot and
               edge map shift with the image, pixel for pixel (zero = "no class" in the border).
  cutout       a cutout_ratio x cutout_ratio rectangle of the image set to 0. The conditioning is kept
               by default (cutout_label=False): D still sees the complete layout, and since the hole
               is identical in real and fake it carries no real/fake cue; cutout_label=True also
               zeroes the label/edge channels there (DiffAugment's unconditional behaviour).
Each op is applied per sample with probability p_<op> (1 = always, as in DiffAugment).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from pix2pixhd_jax.choices import AUGMENT_OPS as OPS

Array = jax.Array


def parse_policy(policy: str) -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'); '' -> () (augmentation off)."""
    ops = tuple(p.strip() for p in policy.split(",") if p.strip())
    bad = [p for p in ops if p not in OPS]
    if bad:
        raise ValueError(f"augment.policy={policy!r}: unknown ops {bad}; use a comma list of {OPS}")
    return ops


@dataclasses.dataclass(frozen=True)
class AugmentOptions:
    """What augmentation reads from config.augment, checked once (static: hashable, no arrays)."""

    ops: tuple[str, ...]
    p_color: float
    p_translation: float
    p_cutout: float
    translation_ratio: float
    cutout_ratio: float
    cutout_label: bool

    @classmethod
    def from_config(cls, aug_cfg: ml_collections.ConfigDict) -> "AugmentOptions":
        return cls(ops=parse_policy(aug_cfg.policy), p_color=float(aug_cfg.p_color),
                   p_translation=float(aug_cfg.p_translation), p_cutout=float(aug_cfg.p_cutout),
                   translation_ratio=float(aug_cfg.translation_ratio), cutout_ratio=float(aug_cfg.cutout_ratio),
                   cutout_label=bool(aug_cfg.cutout_label))

    @property
    def enabled(self) -> bool:
        return bool(self.ops)


def _span(size: int, ratio: float) -> int:
    return int(size * ratio + 0.5)


def sample_params(rng: jax.Array, batch: int, height: int, width: int, aug_cfg: AugmentOptions) -> dict:
    """One transform per sample: a dict of (B,) arrays for the ops of the policy."""
    ops = aug_cfg.ops
    k = iter(jax.random.split(rng, 12))
    uniform = lambda lo, hi: jax.random.uniform(next(k), (batch,), jnp.float32, lo, hi)
    apply = lambda p: jax.random.bernoulli(next(k), p, (batch,))
    params: dict[str, Any] = {}
    if "color" in ops:
        on = apply(aug_cfg.p_color)
        params["brightness"] = jnp.where(on, uniform(-0.5, 0.5), 0.0)
        params["saturation"] = jnp.where(on, uniform(0.0, 2.0), 1.0)
        params["contrast"] = jnp.where(on, uniform(0.5, 1.5), 1.0)
    if "translation" in ops:
        on = apply(aug_cfg.p_translation)
        sy, sx = _span(height, aug_cfg.translation_ratio), _span(width, aug_cfg.translation_ratio)
        params["shift_y"] = jnp.where(on, jax.random.randint(next(k), (batch,), -sy, sy + 1), 0)
        params["shift_x"] = jnp.where(on, jax.random.randint(next(k), (batch,), -sx, sx + 1), 0)
    if "cutout" in ops:
        ch, cw = _span(height, aug_cfg.cutout_ratio), _span(width, aug_cfg.cutout_ratio)
        # Centre anywhere in the image (the rectangle may stick out), as DiffAugment.
        params["cutout"] = apply(aug_cfg.p_cutout)
        params["cut_y0"] = jax.random.randint(next(k), (batch,), 0, height + (1 - ch % 2)) - ch // 2
        params["cut_x0"] = jax.random.randint(next(k), (batch,), 0, width + (1 - cw % 2)) - cw // 2
        params["cut_h"], params["cut_w"] = jnp.full((batch,), ch), jnp.full((batch,), cw)
    return params


def color(x: Array, params: dict) -> Array:
    """Brightness, saturation, contrast (in that order) of (B, H, W, C) images."""
    b = lambda name: params[name][:, None, None, None].astype(x.dtype)
    x = x + b("brightness")
    mean = jnp.mean(x, axis=-1, keepdims=True)
    x = (x - mean) * b("saturation") + mean
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - mean) * b("contrast") + mean


def translate(x: Array, shift_y: Array, shift_x: Array, max_y: int, max_x: int) -> Array:
    """out[b, y, x] = in[b, y - shift_y[b], x - shift_x[b]], zero outside; |shift| <= max (static)."""
    _, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (max_y, max_y), (max_x, max_x), (0, 0)))
    one = lambda img, dy, dx: jax.lax.dynamic_slice(img, (max_y - dy, max_x - dx, 0), (h, w, c))
    return jax.vmap(one)(padded, shift_y, shift_x)


def cutout_mask(params: dict, height: int, width: int) -> Array:
    """(B, H, W, 1) float mask: 0 inside each sample's cutout rectangle (when applied), 1 elsewhere."""
    y = jnp.arange(height)[None, :, None]
    x = jnp.arange(width)[None, None, :]
    col = lambda name: params[name][:, None, None]
    inside = ((y >= col("cut_y0")) & (y < col("cut_y0") + col("cut_h"))
              & (x >= col("cut_x0")) & (x < col("cut_x0") + col("cut_w")))
    return jnp.where(inside & col("cutout"), 0.0, 1.0)[..., None]


def apply(x: Array, params: dict, aug_cfg: AugmentOptions, *, is_label: bool) -> Array:
    """Augment a D input half: images get every op; the label encoding only the geometric ones
    (translation, and cutout if aug_cfg.cutout_label). The same `params` on real, fake and label
    keep them aligned."""
    _, h, w, _ = x.shape
    if "brightness" in params and not is_label:
        x = color(x, params)
    if "shift_y" in params:
        x = translate(x, params["shift_y"], params["shift_x"], _span(h, aug_cfg.translation_ratio),
                      _span(w, aug_cfg.translation_ratio))
    if "cutout" in params and (not is_label or aug_cfg.cutout_label):
        x = x * cutout_mask(params, h, w).astype(x.dtype)
    return x
