"""Local edits: keep the previous image wherever the generator's input did not change.

The generator sees the whole map at once (instance norm statistics, a receptive field wider than
the image), so re-rendering after an edit moves every pixel a little, far from the edit too.
Compositing the new render into the previous image around what the edit changed keeps the rest
of the image byte-identical:

  changed_region  pixels whose generator input differs: class, instance id, boundary map value
                  or per-pixel feature vector
  blend_weights   1 within margin_px (Euclidean distance) of a changed pixel, falling linearly to
                  0 over the next feather_px, 0 beyond
  composite       new * w + previous * (1 - w) as uint8; w == 0 keeps previous exactly

All functions are pure numpy on explicit arrays.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
from scipy import ndimage

from pix2pixhd_jax.editing.ops import numpy_edges


def check_px(value: Any, name: str) -> int:
    """A margin or feather width: an integer >= 0 (bools refused: they are not distances)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name}={value!r} must be an integer number of pixels >= 0")
    return int(value)


def changed_region(old_label: np.ndarray, old_inst: np.ndarray, new_label: np.ndarray, new_inst: np.ndarray,
                   old_features: Optional[np.ndarray] = None, new_features: Optional[np.ndarray] = None) -> np.ndarray:
    """(H, W) bool: where label, instance id, edge map or (H, W, F) feature vector differ between two scenes.

    The edge map is derived from the instance map, but its value also changes on the unchanged
    side of a changed boundary (a neighbour's id changed), so it is compared on its own.
    """
    old_label, old_inst, new_label, new_inst = map(np.asarray, (old_label, old_inst, new_label, new_inst))
    shapes = {a.shape for a in (old_label, old_inst, new_label, new_inst)}
    if len(shapes) != 1 or old_label.ndim != 2:
        raise ValueError(f"label and instance maps must all be one (H, W) shape, got {sorted(shapes)}")
    changed = (old_label != new_label) | (old_inst != new_inst)
    changed |= numpy_edges(old_inst) != numpy_edges(new_inst)
    if (old_features is None) != (new_features is None):
        raise ValueError("give the feature maps of both scenes or of neither")
    if old_features is not None:
        old_features, new_features = np.asarray(old_features), np.asarray(new_features)
        if old_features.shape != new_features.shape or old_features.shape[:2] != old_label.shape:
            raise ValueError(f"feature maps {old_features.shape} and {new_features.shape} must both be "
                             f"{old_label.shape} + (F,)")
        changed |= (old_features != new_features).any(axis=-1)
    return changed


def _grown_box(changed: np.ndarray, reach: int) -> tuple[slice, slice]:
    """The changed pixels' box grown by `reach`: every pixel with a weight > 0 lies inside it."""
    ys, xs = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    h, w = changed.shape
    return (slice(max(0, int(ys[0]) - reach), min(h, int(ys[-1]) + reach + 1)),
            slice(max(0, int(xs[0]) - reach), min(w, int(xs[-1]) + reach + 1)))


def blend_weights(changed: np.ndarray, margin_px: int, feather_px: int) -> np.ndarray:
    """(H, W) float32 weight of the new render: 1 within margin_px of a change, linear to 0 over feather_px."""
    changed = np.asarray(changed, bool)
    margin_px, feather_px = check_px(margin_px, "margin_px"), check_px(feather_px, "feather_px")
    weights = np.zeros(changed.shape, np.float32)
    if not changed.any():
        return weights
    # Only the box around the change can get a weight: the distance transform runs there alone.
    window = _grown_box(changed, margin_px + feather_px + 1)
    distance = ndimage.distance_transform_edt(~changed[window])  # to the nearest changed pixel
    beyond = distance - margin_px
    if feather_px == 0:
        weights[window] = beyond <= 0
    else:
        weights[window] = np.clip(1.0 - beyond / feather_px, 0.0, 1.0)
    return weights


def composite(previous_image: np.ndarray, new_image: np.ndarray, changed: np.ndarray, margin_px: int,
              feather_px: int) -> np.ndarray:
    """The new render blended into the previous image around `changed` -> uint8 (H, W, C).

    Pixels farther than margin_px + feather_px from every changed pixel are previous_image's bytes;
    pixels within margin_px are new_image's. No change at all returns (a copy of) previous_image.
    """
    previous_image, new_image = np.asarray(previous_image), np.asarray(new_image)
    if previous_image.dtype != np.uint8 or new_image.dtype != np.uint8:
        raise ValueError(f"composite blends uint8 images, got {previous_image.dtype} and {new_image.dtype}")
    if previous_image.shape != new_image.shape or previous_image.shape[:2] != np.shape(changed):
        raise ValueError(f"images {previous_image.shape} and {new_image.shape} and the mask {np.shape(changed)} "
                         "must share (H, W)")
    weights = blend_weights(changed, margin_px, feather_px)
    out = previous_image.copy()
    if not weights.any():
        return out
    window = _grown_box(weights > 0, 0)
    w = weights[window][..., None]
    blended = new_image[window].astype(np.float32) * w + previous_image[window].astype(np.float32) * (1.0 - w)
    out[window] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
