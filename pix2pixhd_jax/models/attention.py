"""SAGAN self-attention (Zhang et al. 2019) for the discriminator pyramid and G's bottleneck, NHWC.

x + gate * out(softmax(q k^T) v), with 1x1 projections q, k to C/reduction channels, v to C/2 and
an output 1x1 projection back to C (the BigGAN layout of SAGAN's block). The gate is a learned
scalar initialised at 0, so a freshly inserted block is exactly the identity and a pretrained
network keeps its outputs.

Attention over all N positions costs O(N^2) memory (the logits), which rules it out at the finest
discriminator scales of 2048x1024 images. Two bounded forms:
  'pooled'  keys and values average-pooled by `pool` (N x N/pool^2 logits; every query still sees
            the whole image, at coarser resolution)
  'window'  attention inside non-overlapping window x window tiles (N x window^2 logits; local only)
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from pix2pixhd_jax.choices import ATTENTION_FORMS as FORMS
from pix2pixhd_jax.models.layers import Array, ConvOptions



@dataclasses.dataclass(frozen=True)
class AttentionConfig:
    """Shape of every self-attention block of a network (hashable: a module attribute)."""

    form: str = "full"
    pool: int = 4
    window: int = 16
    reduction: int = 8

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"attention form {self.form!r} is not one of {FORMS} (model.attention_form)")
        if self.pool < 1 or self.window < 1 or self.reduction < 1:
            raise ValueError(f"attention pool={self.pool}, window={self.window}, reduction={self.reduction} must be "
                             ">= 1 (model.attention_pool / attention_window / attention_reduction)")


def attend(q: Array, k: Array, v: Array, key_mask: Optional[Array] = None) -> Array:
    """softmax(q k^T) v over the key axis: q (B, N, d), k (B, M, d), v (B, M, c) -> (B, N, c).

    Logits and softmax in float32 (bf16 logits over thousands of keys lose the small weights);
    key_mask (B, M) False marks padding keys.
    """
    logits = jnp.einsum("bnd,bmd->bnm", q.astype(jnp.float32), k.astype(jnp.float32))
    if key_mask is not None:
        logits = jnp.where(key_mask[:, None, :], logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bnm,bmc->bnc", weights.astype(v.dtype), v)


def pool_map(x: Array, factor: int) -> Array:
    """Average-pool H and W by `factor`; a ragged last row/column averages only the pixels it has."""
    if factor == 1:
        return x
    ph, pw = -x.shape[1] % factor, -x.shape[2] % factor
    return nn.avg_pool(x, (factor, factor), strides=(factor, factor), padding=((0, ph), (0, pw)),
                       count_include_pad=False)


def _to_windows(t: Array, win: int) -> Array:
    """(B, H, W, C) with H, W multiples of win -> (B * H/win * W/win, win*win, C), batch-major."""
    b, h, w, c = t.shape
    t = t.reshape(b, h // win, win, w // win, win, c).transpose(0, 1, 3, 2, 4, 5)
    return t.reshape(b * (h // win) * (w // win), win * win, c)


def _from_windows(t: Array, b: int, h: int, w: int, win: int) -> Array:
    """Inverse of _to_windows for a padded (h, w)."""
    c = t.shape[-1]
    t = t.reshape(b, h // win, w // win, win, win, c).transpose(0, 1, 3, 2, 4, 5)
    return t.reshape(b, h, w, c)


def window_attention(q: Array, k: Array, v: Array, win: int) -> Array:
    """Attention within non-overlapping win x win tiles; maps are zero-padded to a multiple of win and
    the padding is masked out of the keys (D feature maps have odd sizes such as 33x65)."""
    b, h, w, _ = q.shape
    ph, pw = -h % win, -w % win
    pad = lambda t: jnp.pad(t, ((0, 0), (0, ph), (0, pw), (0, 0)))
    mask = None
    if ph or pw:
        valid = pad(jnp.ones((1, h, w, 1), jnp.bool_))
        mask = jnp.tile(_to_windows(valid, win)[..., 0], (b, 1))
    out = attend(_to_windows(pad(q), win), _to_windows(pad(k), win), _to_windows(pad(v), win), mask)
    return _from_windows(out, b, h + ph, w + pw, win)[:, :h, :w]


class SelfAttention(ConvOptions):
    """x + gate * out(attention(q(x), k(x), v(x))); gate starts at 0 (identity at init).

    Submodules `query`, `key`, `value`, `out` (1x1 convs, spectrally normalised with the host
    network) and the scalar param `gate`.
    """

    config: AttentionConfig = AttentionConfig()

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        cfg = self.config
        b, h, w, c = x.shape
        c_qk, c_v = max(1, c // cfg.reduction), max(1, c // 2)
        conv = lambda f, name: self.conv(f, 1, name=name)
        q, k, v = conv(c_qk, "query")(x, train), conv(c_qk, "key")(x, train), conv(c_v, "value")(x, train)
        if cfg.form == "window":
            o = window_attention(q, k, v, cfg.window)
        else:
            if cfg.form == "pooled":
                k, v = pool_map(k, cfg.pool), pool_map(v, cfg.pool)
            flat = lambda t: t.reshape(b, -1, t.shape[-1])
            o = attend(flat(q), flat(k), flat(v)).reshape(b, h, w, c_v)
        o = conv(c, "out")(o, train)
        gate = self.param("gate", nn.initializers.zeros, ())
        # gate == 0 gives x + 0 == x bit for bit, in float32 and bfloat16 alike.
        return x + (gate.astype(o.dtype) * o).astype(x.dtype)
