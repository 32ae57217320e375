"""Pure operations on (label, instance) map pairs: region masks, object ids, and geometric edits.

Every function takes host numpy maps and returns new ones (inputs are never written). Region ids
follow the Cityscapes convention: a stuff region's id is its class id (< 1000), an object's id is
class * 1000 + k with 0 <= k < 1000.

Geometric edits (move, delete, resize, flip) first vacate the region's pixels, then draw the
region at its new place in front of whatever it lands on (pixels past the map border are dropped).

Hole-filling rule (shared by all four): each vacated pixel takes the stuff region (id < 1000) of
the nearest stuff pixel (Euclidean distance) inside the object's box grown by `FILL_RING` pixels
(grown further until it holds stuff); other objects are never copied into a hole, so a car in
front of a building and a road leaves building above and road below. A map with no other stuff at
all uses the nearest other region. The pixels take that region's id and its class.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from pix2pixhd_jax.data import cityscapes as cs

INSTANCE_OFFSET = cs.INSTANCE_ID_OFFSET
FILL_RING = 2  # pixels around an object searched first for the stuff that fills its hole
MAX_SCALE = 16.0
MAX_BRUSH_POINTS = 20_000
MAX_BRUSH_WORK = 1 << 25  # pixel tests per stroke (about a second of numpy): bounds a request's time


# ----------------------------------------------------------------------------- ids


def object_id_range(class_id: int) -> tuple[int, int]:
    """[first, last] object ids of a class (class*1000 .. class*1000 + 999)."""
    return class_id * INSTANCE_OFFSET, class_id * INSTANCE_OFFSET + INSTANCE_OFFSET - 1


def next_object_id(inst: np.ndarray, class_id: int) -> int:
    """A free object id of `class_id`: max k + 1, else the smallest free k; raises when all 1000 are used."""
    class_id = int(class_id)
    if class_id < 1:
        raise ValueError(f"class {class_id} cannot hold objects: object ids are class*{INSTANCE_OFFSET} + k, "
                         f"which for class 0 collide with stuff ids")
    first, last = object_id_range(class_id)
    used = np.unique(inst[(inst >= first) & (inst <= last)]) - first
    if not used.size:
        return first
    if used[-1] + 1 < INSTANCE_OFFSET:
        return first + int(used[-1]) + 1
    free = np.setdiff1d(np.arange(INSTANCE_OFFSET), used)
    if not free.size:
        raise ValueError(f"class {class_id} already has {INSTANCE_OFFSET} objects (ids {first}..{last}); "
                         "delete or relabel one first")
    return first + int(free[0])


def region_ids(inst: np.ndarray) -> np.ndarray:
    """Sorted distinct ids of a map (np.unique, by counting when ids are small: several times faster)."""
    flat = np.asarray(inst).reshape(-1)
    if flat.size and 0 <= flat.min() and flat.max() < 1 << 20:
        return np.flatnonzero(np.bincount(flat))
    return np.unique(flat)


def region_mask(inst: np.ndarray, region_id: int) -> np.ndarray:
    mask = inst == int(region_id)
    if not mask.any():
        present = np.unique(inst).tolist()
        raise KeyError(f"instance {region_id} is not in the map; instances present: {present[:40]}"
                       f"{' ...' if len(present) > 40 else ''}")
    return mask


def numpy_edges(inst: np.ndarray) -> np.ndarray:
    """(H, W) float32 boundary map: 1 where a pixel's id differs from a 4-neighbour (host twin of
    semantics.instance_edges for one map, as G sees it)."""
    inst = np.asarray(inst)
    edge = np.zeros(inst.shape, bool)
    dx, dy = inst[:, 1:] != inst[:, :-1], inst[1:] != inst[:-1]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:] |= dy
    edge[:-1] |= dy
    return edge.astype(np.float32)


# ----------------------------------------------------------------------------- masks


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return float(value)


def as_int(value: Any, what: str) -> int:
    """An integer from JSON: ints, or floats with no fraction (7.0); 7.9, strings and booleans raise."""
    number = _number(value, what)
    if not number.is_integer():
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(number)


def as_float(value: Any, what: str) -> float:
    return _number(value, what)


def _ints(values: Any, n: int, what: str) -> list[int]:
    if not isinstance(values, (list, tuple)) or len(values) != n:
        raise ValueError(f"{what} must be a list of {n} integers, got {values!r}")
    return [as_int(v, what) for v in values]


def rect_mask(shape: tuple[int, int], rect: Any) -> np.ndarray:
    """[y0, x0, y1, x1] (end-exclusive) inside the map -> mask; out-of-range corners raise."""
    h, w = shape
    y0, x0, y1, x1 = _ints(rect, 4, "rect [y0, x0, y1, x1]")
    if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
        raise ValueError(f"rect {[y0, x0, y1, x1]} is not inside the {h}x{w} map: need 0 <= y0 < y1 <= {h} "
                         f"and 0 <= x0 < x1 <= {w} (end-exclusive)")
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _check_point(shape: tuple[int, int], y: float, x: float, what: str) -> None:
    h, w = shape
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"{what} ({y:g}, {x:g}) is outside the {h}x{w} map")


def _radius(value: Any, shape: tuple[int, int]) -> float:
    r = as_float(value, "radius")
    if not 0 < r <= max(shape):
        raise ValueError(f"radius {r:g} must be in (0, {max(shape)}]")
    return r


def disc_mask(shape: tuple[int, int], circle: Any) -> np.ndarray:
    """[y, x, r]: the pixels within r of a centre inside the map (the official brush is a square)."""
    if not isinstance(circle, (list, tuple)) or len(circle) != 3:
        raise ValueError(f"circle must be [y, x, radius], got {circle!r}")
    cy, cx = as_float(circle[0], "circle y"), as_float(circle[1], "circle x")
    _check_point(shape, cy, cx, "circle centre")
    r = _radius(circle[2], shape)
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def brush_mask(shape: tuple[int, int], brush: Any) -> np.ndarray:
    """{"radius": r, "points": [[y, x], ...]}: the pixels within r of the polyline through the points (a stroke)."""
    if not isinstance(brush, dict) or "points" not in brush or "radius" not in brush:
        raise ValueError(f"brush must be {{\"radius\": r, \"points\": [[y, x], ...]}}, got {str(brush)[:80]}")
    r, points = _radius(brush["radius"], shape), brush["points"]
    if not isinstance(points, list) or not 1 <= len(points) <= MAX_BRUSH_POINTS:
        raise ValueError(f"brush points must be a list of 1..{MAX_BRUSH_POINTS} [y, x] pairs")
    pts = np.array([[as_float(v, "brush point") for v in _pair(p)] for p in points], np.float64)
    for y, x in pts:
        _check_point(shape, y, x, "brush point")
    starts, ends = (pts, pts) if len(pts) == 1 else (pts[:-1], pts[1:])
    h, w = shape
    lo = np.floor(np.minimum(starts, ends) - r).clip(0).astype(np.int64)
    hi = (np.ceil(np.maximum(starts, ends) + r) + 1).clip(None, [h, w]).astype(np.int64)
    work = int(np.prod(hi - lo, axis=1).sum())
    if work > MAX_BRUSH_WORK:
        raise ValueError(f"brush stroke too large ({work} pixel tests, limit {MAX_BRUSH_WORK}): use fewer points, a "
                         "smaller radius or several strokes")
    mask = np.zeros(shape, bool)
    for a, b, (y0, x0), (y1, x1) in zip(starts, ends, lo, hi):
        yy, xx = np.ogrid[y0:y1, x0:x1]
        d = b - a
        # Distance from each pixel to the segment a-b (a capsule of radius r around it).
        t = 0.0 if not d.any() else np.clip(((yy - a[0]) * d[0] + (xx - a[1]) * d[1]) / float(d @ d), 0.0, 1.0)
        mask[y0:y1, x0:x1] |= (yy - a[0] - t * d[0]) ** 2 + (xx - a[1] - t * d[1]) ** 2 <= r * r
    return mask


def polygon_mask(shape: tuple[int, int], points: Any) -> np.ndarray:
    """[[y, x], ...] (3 or more vertices inside the map): the pixels inside the closed polygon (even-odd
    rule on pixel positions) and on its outline, so a thin polygon still has pixels."""
    if not isinstance(points, list) or not 3 <= len(points) <= MAX_BRUSH_POINTS:
        raise ValueError(f"polygon must be a list of 3..{MAX_BRUSH_POINTS} [y, x] vertices, got {str(points)[:80]}")
    pts = np.array([[as_float(v, "polygon vertex") for v in _pair(p)] for p in points], np.float64)
    for y, x in pts:
        _check_point(shape, y, x, "polygon vertex")
    y0, x0 = np.floor(pts.min(0)).astype(np.int64)
    y1, x1 = np.ceil(pts.max(0)).astype(np.int64) + 1
    work = len(pts) * int((y1 - y0) * (x1 - x0))
    if work > MAX_BRUSH_WORK:
        raise ValueError(f"polygon too large ({work} pixel tests, limit {MAX_BRUSH_WORK}): use fewer vertices")
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    inside = np.zeros(yy.shape, bool)
    for (ay, ax), (by, bx) in zip(pts, np.roll(pts, -1, axis=0)):
        if ay == by:
            continue
        crosses = (ay > yy) != (by > yy)
        inside ^= crosses & (xx < ax + (yy - ay) * (bx - ax) / (by - ay))
    mask = brush_mask(shape, {"radius": 0.5, "points": pts.tolist() + [pts[0].tolist()]})
    mask[y0:y1, x0:x1] |= inside
    return mask


def fill_mask(inst: np.ndarray, point: Any) -> np.ndarray:
    """[y, x]: the 4-connected part of the region under the pixel (a flood fill of its instance id)."""
    y, x = _ints(point, 2, "fill [y, x]")
    _check_point(inst.shape, y, x, "fill point")
    parts, _ = ndimage.label(inst == inst[y, x])
    return parts == parts[y, x]


def _pair(p: Any) -> Sequence[Any]:
    if not isinstance(p, (list, tuple)) or len(p) != 2:
        raise ValueError(f"a brush point must be [y, x], got {p!r}")
    return p


# ----------------------------------------------------------------------------- hole filling


def fill_values(label: np.ndarray, inst: np.ndarray, mask: np.ndarray,
                ring: int = FILL_RING) -> tuple[np.ndarray, np.ndarray]:
    """(classes, region ids) the pixels of `mask` take when vacated, in np.nonzero order (module docstring)."""
    ys, xs = np.nonzero(mask)
    if not ys.size:
        raise ValueError("the region to fill is empty")
    h, w = mask.shape
    stuff = inst < INSTANCE_OFFSET
    if not (stuff & ~mask).any():
        stuff = np.ones_like(mask)  # only objects left: any other region
        if mask.all():
            raise ValueError("the region covers the whole map: there is nothing to fill its pixels with")
    margin = max(1, int(ring))
    while True:
        y0, y1 = max(0, ys.min() - margin), min(h, ys.max() + margin + 1)
        x0, x1 = max(0, xs.min() - margin), min(w, xs.max() + margin + 1)
        window = (slice(y0, y1), slice(x0, x1))
        sources = stuff[window] & ~mask[window]
        if sources.any():
            break
        margin *= 2
    # For every window pixel, the index of the nearest source pixel (exact Euclidean distance transform).
    iy, ix = ndimage.distance_transform_edt(~sources, return_distances=False, return_indices=True)
    nearest = iy * sources.shape[1] + ix
    flat = nearest[ys - y0, xs - x0]
    return label[window].reshape(-1)[flat], inst[window].reshape(-1)[flat]


def vacate(label: np.ndarray, inst: np.ndarray, mask: np.ndarray, ring: int = FILL_RING) -> tuple[np.ndarray, np.ndarray]:
    """Copies of the maps with `mask` filled by the hole-filling rule."""
    classes, regions = fill_values(label, inst, mask, ring)
    label, inst = label.copy(), inst.copy()
    label[mask], inst[mask] = classes, regions
    return label, inst


def _redraw(label: np.ndarray, inst: np.ndarray, region_id: int, src_label: np.ndarray,
            ys: np.ndarray, xs: np.ndarray, sy: np.ndarray, sx: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Vacate the region, then draw source pixels (sy, sx) at (ys, xs) in front; off-map targets dropped."""
    h, w = inst.shape
    mask = inst == region_id
    keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    if not keep.any():
        raise ValueError(f"{what} leaves no pixel of instance {region_id} on the {h}x{w} map; "
                         "use delete to remove an object")
    out_label, out_inst = vacate(label, inst, mask)
    ys, xs, sy, sx = ys[keep], xs[keep], sy[keep], sx[keep]
    out_label[ys, xs], out_inst[ys, xs] = src_label[sy, sx], region_id
    return out_label, out_inst


def move_region(label: np.ndarray, inst: np.ndarray, region_id: int, dy: int, dx: int) -> tuple[np.ndarray, np.ndarray]:
    """Shift a region by (dy, dx) pixels (down, right); it keeps its id (hence its feature)."""
    ys, xs = np.nonzero(region_mask(inst, region_id))
    h, w = inst.shape
    if abs(dy) >= h or abs(dx) >= w:
        raise ValueError(f"moving by ({dy}, {dx}) leaves no pixel of instance {region_id} on the {h}x{w} map; "
                         "use delete to remove an object")
    return _redraw(label, inst, region_id, label, ys + dy, xs + dx, ys, xs, f"moving by ({dy}, {dx})")


def delete_region(label: np.ndarray, inst: np.ndarray, region_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove a region: its pixels are filled by the hole-filling rule."""
    return vacate(label, inst, region_mask(inst, region_id))


def resize_region(label: np.ndarray, inst: np.ndarray, region_id: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale a region about its centroid; nearest neighbour on the mask (scale 1 is the identity)."""
    scale = as_float(scale, "scale")
    if not 1.0 / MAX_SCALE <= scale <= MAX_SCALE:
        raise ValueError(f"scale {scale:g} must be in [{1 / MAX_SCALE:g}, {MAX_SCALE:g}]")
    mask = region_mask(inst, region_id)
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    h, w = inst.shape
    # Target pixels whose source (inverse-mapped centre, rounded half up) lies in the mask.
    def span(lo: int, hi: int, c: float, n: int) -> slice:
        """Target pixels the scaled box [lo - 0.5, hi + 0.5] can reach along one axis."""
        start = max(0, math.floor(c + (lo - 0.5 - c) * scale))
        return slice(start, max(start, min(n, math.ceil(c + (hi + 0.5 - c) * scale) + 1)))

    ty, tx = np.mgrid[span(ys.min(), ys.max(), cy, h), span(xs.min(), xs.max(), cx, w)]
    sy = np.floor(cy + (ty - cy) / scale + 0.5).astype(np.int64)
    sx = np.floor(cx + (tx - cx) / scale + 0.5).astype(np.int64)
    inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    inside[inside] = mask[sy[inside], sx[inside]]
    return _redraw(label, inst, region_id, label, ty[inside], tx[inside], sy[inside], sx[inside],
                   f"resizing by {scale:g}")


def flip_region(label: np.ndarray, inst: np.ndarray, region_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Mirror a region left-right inside its own bounding box."""
    ys, xs = np.nonzero(region_mask(inst, region_id))
    tx = xs.min() + xs.max() - xs
    return _redraw(label, inst, region_id, label, ys, tx, ys, xs, "flipping")
