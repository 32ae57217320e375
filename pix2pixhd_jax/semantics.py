"""Semantic input encoding: label one-hot, instance boundary map, instance-wise average pooling."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def check_labels(label: np.ndarray, label_nc: int, source: str = "label map") -> None:
    """Host-side check (before jit) that every label id lies in [0, label_nc)."""
    label = np.asarray(label)
    if label_nc == 0:
        return
    if label.size == 0:
        return
    lo, hi = int(label.min()), int(label.max())
    if hi >= label_nc or lo < 0:
        bad = hi if hi >= label_nc else lo
        raise ValueError(
            f"label {bad} in {source} is outside [0, label_nc={label_nc}); "
            f"set model.label_nc to the number of classes of your dataset (ids run 0..label_nc-1)."
        )


def one_hot_labels(label: Array, label_nc: int, dtype=jnp.float32) -> Array:
    """(B, H, W) integer ids -> (B, H, W, label_nc) one-hot.

    An id outside [0, label_nc) gives a NaN vector instead of jax.nn.one_hot's silent all-zero row,
    so a bad label that slipped past check_labels poisons the loss instead of training quietly.
    """
    label = label.astype(jnp.int32)
    onehot = jax.nn.one_hot(label, label_nc, dtype=dtype)
    valid = ((label >= 0) & (label < label_nc))[..., None]
    return jnp.where(valid, onehot, jnp.nan).astype(dtype)


def instance_edges(inst: Array) -> Array:
    """(B, H, W) instance ids -> (B, H, W) float map, 1 where a pixel differs from any 4-neighbour."""
    diff_x = inst[:, :, 1:] != inst[:, :, :-1]  # (B, H, W-1), pair (x, x+1)
    diff_y = inst[:, 1:, :] != inst[:, :-1, :]  # (B, H-1, W), pair (y, y+1)
    # Both pixels of a differing pair are marked; border pixels have only their existing neighbours.
    edge = jnp.zeros(inst.shape, bool)
    edge = edge.at[:, :, 1:].set(edge[:, :, 1:] | diff_x)
    edge = edge.at[:, :, :-1].set(edge[:, :, :-1] | diff_x)
    edge = edge.at[:, 1:, :].set(edge[:, 1:, :] | diff_y)
    edge = edge.at[:, :-1, :].set(edge[:, :-1, :] | diff_y)
    return edge.astype(jnp.float32)


def _segments(ids: Array) -> Array:
    """(N,) ids of any range -> (N,) dense segment index in [0, N): equal ids share a segment."""
    order = jnp.argsort(ids)
    sorted_ids = ids[order]
    starts = jnp.concatenate([jnp.zeros((1,), jnp.int32), (sorted_ids[1:] != sorted_ids[:-1]).astype(jnp.int32)])
    return jnp.zeros_like(order).at[order].set(jnp.cumsum(starts))


def instance_average_pool(features: Array, inst: Array) -> Array:
    """Replace each pixel's features by their mean over its instance, per sample; differentiable.

    features: (B, H, W, C); inst: (B, H, W) integer ids (any range). Vectorised with a sort and
    segment sums, so no Python loop over ids and a fixed shape under jit.
    """

    def pool_one(feat: Array, ids: Array) -> Array:
        h, w, c = feat.shape
        feat = feat.reshape(h * w, c)
        segment = _segments(ids.reshape(h * w))
        sums = jax.ops.segment_sum(feat.astype(jnp.float32), segment, num_segments=h * w)
        counts = jax.ops.segment_sum(jnp.ones((h * w,), jnp.float32), segment, num_segments=h * w)
        means = sums / jnp.maximum(counts, 1.0)[:, None]
        return means[segment].reshape(h, w, c).astype(feat.dtype)

    return jax.vmap(pool_one)(features, inst)


def region_sizes(inst: Array) -> Array:
    """(B, H, W) ids -> (B, H, W) float32: the pixel count of each pixel's region."""

    def sizes_one(ids: Array) -> Array:
        segment = _segments(ids.reshape(-1))
        counts = jax.ops.segment_sum(jnp.ones(segment.shape, jnp.float32), segment, num_segments=segment.size)
        return counts[segment].reshape(ids.shape)

    return jax.vmap(sizes_one)(inst)


def encode_input(
    label: Array,
    inst: Optional[Array],
    *,
    label_nc: int,
    use_instance: bool,
    features: Optional[Array] = None,
    dtype=jnp.float32,
) -> Array:
    """Build G's input: one-hot (or the RGB label image when label_nc == 0), edge map, features.

    label: (B, H, W) ids, or (B, H, W, C) floats in [-1, 1] when label_nc == 0.
    inst: (B, H, W) instance ids; required when use_instance.
    features: optional (B, H, W, feat_num) pooled encoder features, appended last (G only; D
    never sees them, as in the official code).
    """
    if label_nc == 0:
        if label.ndim != 4:
            raise ValueError(f"label_nc=0 expects an RGB label image (B, H, W, C), got shape {label.shape}")
        parts = [label.astype(dtype)]
    else:
        if label.ndim != 3:
            raise ValueError(f"label must be (B, H, W) integer ids for label_nc={label_nc}, got shape {label.shape}")
        parts = [one_hot_labels(label, label_nc, dtype)]
    if use_instance:
        if inst is None:
            raise ValueError("use_instance=True needs an instance map; pass inst or set model.use_instance=False")
        if inst.shape != label.shape[:3]:
            raise ValueError(f"instance map shape {inst.shape} does not match label shape {label.shape[:3]}")
        parts.append(instance_edges(inst)[..., None].astype(dtype))
    if features is not None:
        parts.append(features.astype(dtype))
    return jnp.concatenate(parts, axis=-1)


def input_channels(*, label_nc: int, input_nc: int, use_instance: bool, feat_num: int = 0) -> int:
    """Channels of G's input: label_nc (or input_nc for RGB input) + edge + features."""
    return (label_nc if label_nc else input_nc) + int(use_instance) + feat_num


def class_of_instance(inst_id: np.ndarray | int) -> np.ndarray | int:
    """Cityscapes convention: id < 1000 is a stuff class id; otherwise class * 1000 + k."""
    return np.where(np.asarray(inst_id) < 1000, inst_id, np.asarray(inst_id) // 1000)
