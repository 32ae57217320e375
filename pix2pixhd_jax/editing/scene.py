"""The scene being edited and the pure edits on it.

A `Scene` is a label map, an instance map and one feature vector per region. Pure functions
return a new Scene for each edit:

  relabel_instance  an object becomes another class (new instance id class*1000 + k for thing
                    classes, the stuff id otherwise); its feature is copied (official)
  paint_region      pixels under a mask take a class (stuff merges into that class's region;
                    a thing class becomes one new object)
  add_object        a new object of a class from a mask, with a chosen cluster or feature
  set_feature       an instance's feature vector (a bank cluster, a vector, or a colour via
                    colour_feature / corrected_colour_feature for colour-anchored models)
  copy_feature      one instance's feature onto another
  move_instance     shift an object by (dy, dx); it keeps its id, hence its feature
  delete_instance   remove an object; resize_instance / flip_instance scale it about its
                    centroid / mirror it left-right

Vacated pixels are filled by the rule of `ops` (each takes the nearest surrounding stuff region;
other objects are never copied into a hole). Boundaries are never stored: they are recomputed
from the instance map by `Scene.edges()` and by the generator input encoding. Object ids stay
class*1000 + k with k < 1000.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from pix2pixhd_jax.editing import ops


@dataclasses.dataclass(frozen=True)
class Scene:
    """label (H, W) int32, inst (H, W) int32, region id -> feature vector (F,), region id -> cluster."""

    label: np.ndarray
    inst: np.ndarray
    features: Mapping[int, np.ndarray] = dataclasses.field(default_factory=dict)
    clusters: Mapping[int, Optional[int]] = dataclasses.field(default_factory=dict)

    def edges(self) -> np.ndarray:
        """(H, W) float32 boundary map: 1 where a pixel's instance differs from a 4-neighbour (as G sees it)."""
        return ops.numpy_edges(self.inst)

    def instance_at(self, y: int, x: int) -> int:
        h, w = self.inst.shape
        if not (0 <= y < h and 0 <= x < w):
            raise IndexError(f"pixel ({y}, {x}) is outside the {h}x{w} map")
        return int(self.inst[y, x])

    def instances(self) -> list[int]:
        return ops.region_ids(self.inst).tolist()

    def replace(self, **kw) -> "Scene":
        return dataclasses.replace(self, **kw)


def class_of(scene: Scene, inst_id: int) -> int:
    return int(scene.label[ops.region_mask(scene.inst, inst_id)][0])


def new_instance_id(inst: np.ndarray, class_id: int, thing_classes: Sequence[int]) -> int:
    """Official change_labels rule: a thing class gets a free object id class*1000 + k; stuff its class id."""
    class_id = int(class_id)
    first, last = ops.object_id_range(class_id)
    has_objects = class_id >= 1 and bool(((inst >= first) & (inst <= last)).any())
    if class_id in set(thing_classes) or has_objects:
        return ops.next_object_id(inst, class_id)
    return class_id


def check_class(class_id: Any, label_nc: Optional[int]) -> int:
    class_id = ops.as_int(class_id, "class")
    if class_id < 0 or (label_nc and class_id >= label_nc):
        raise ValueError(f"class {class_id} is outside [0, label_nc={label_nc})")
    return class_id


def _check_mask(scene: Scene, mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask).astype(bool)
    if mask.shape != scene.label.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the map {scene.label.shape}")
    if not mask.any():
        raise ValueError("the mask selects no pixel")
    return mask


def check_vector(vector: Any, feat_num: Optional[int] = None) -> np.ndarray:
    """A feature vector as float32 (F,), with finite values and, if given, feat_num entries."""
    try:
        v = np.asarray(vector, np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"a feature vector must be a list of numbers, got {str(vector)[:80]}") from None
    if feat_num is not None and v.shape != (feat_num,):
        raise ValueError(f"feature vector has {v.size} values; model.feat_num={feat_num}")
    if not np.isfinite(v).all():
        raise ValueError(f"feature vector {v.tolist()} has non-finite values (NaN or inf)")
    if np.abs(v).max(initial=0.0) > np.finfo(np.float32).max:
        raise ValueError(f"feature vector {v.tolist()} does not fit float32")
    return v.astype(np.float32)


def check_rgb(rgb: Any) -> np.ndarray:
    """An 8-bit colour as float64 (3,): three finite numbers in [0, 255]."""
    values = list(rgb) if isinstance(rgb, (list, tuple, np.ndarray)) else None
    numbers = values is not None and len(values) == 3 and all(
        isinstance(c, (int, float, np.integer, np.floating)) and not isinstance(c, (bool, np.bool_)) for c in values)
    v = np.asarray(values, np.float64) if numbers else None
    if v is None or not np.isfinite(v).all() or v.min() < 0 or v.max() > 255:
        raise ValueError(f"rgb must be three numbers in [0, 255], got {str(rgb)[:80]}")
    return v


def colour_feature(rgb: Any, current: np.ndarray) -> np.ndarray:
    """The feature asking a colour-anchored model for `rgb`: rgb/127.5 - 1 (as the loss maps the
    region's mean colour), then `current`'s remaining channels unchanged."""
    vector = np.asarray(current, np.float32).copy()
    vector[:3] = check_rgb(rgb) / 127.5 - 1.0
    return vector


def corrected_colour_feature(rgb: Any, current: np.ndarray, rendered_mean: Callable[[np.ndarray], np.ndarray], *,
                             corrections: int, bound: float) -> np.ndarray:
    """colour_feature(rgb, current), then `corrections` times: render it (`rendered_mean`: the object's
    mean colour, 0..255, with a feature) and move channels 0..2 by the shortfall, within +-bound.

    A briefly trained G renders a feature's colour duller than asked (pure red comes out orange-red):
    the measured shortfall, added to the request, asks for a little more where G gives less.
    """
    wanted = check_rgb(rgb)
    vector = colour_feature(wanted, current)
    for _ in range(corrections):
        shortfall = (wanted - np.asarray(rendered_mean(vector), np.float64)) / 127.5
        vector[:3] = np.clip(vector[:3] + shortfall, -bound, bound)
    return vector


def feature_colour(vector: np.ndarray) -> list[int]:
    """The 8-bit colour a colour-anchored feature asks for (colour_feature's inverse, clipped)."""
    return np.clip(np.rint((np.asarray(vector[:3], np.float64) + 1.0) * 127.5), 0, 255).astype(int).tolist()


def _prune(scene: Scene) -> Scene:
    """Drop features of regions that no longer exist."""
    present = set(ops.region_ids(scene.inst).tolist())
    return scene.replace(features={k: v for k, v in scene.features.items() if k in present},
                         clusters={k: v for k, v in scene.clusters.items() if k in present})


def relabel_instance(scene: Scene, inst_id: int, new_class: int, *, thing_classes: Sequence[int],
                     label_nc: Optional[int] = None) -> tuple[Scene, int]:
    """Turn instance `inst_id` into class `new_class` -> (scene, new instance id); the feature is copied."""
    new_class = check_class(new_class, label_nc)
    mask = ops.region_mask(scene.inst, inst_id)
    new_id = new_instance_id(scene.inst, new_class, thing_classes)
    label, inst = scene.label.copy(), scene.inst.copy()
    label[mask], inst[mask] = new_class, new_id
    features, clusters = dict(scene.features), dict(scene.clusters)
    if new_id not in features and inst_id in features:  # merging into existing stuff keeps that region's feature
        features[new_id], clusters[new_id] = features[inst_id], clusters.get(inst_id)
    return _prune(scene.replace(label=label, inst=inst, features=features, clusters=clusters)), new_id


def paint_region(scene: Scene, mask: np.ndarray, new_class: int, *, thing_classes: Sequence[int],
                 label_nc: Optional[int] = None) -> tuple[Scene, int]:
    """Paint `mask` with `new_class` -> (scene, the region id the pixels now belong to)."""
    new_class = check_class(new_class, label_nc)
    mask = _check_mask(scene, mask)
    new_id = new_instance_id(scene.inst, new_class, thing_classes)
    label, inst = scene.label.copy(), scene.inst.copy()
    label[mask], inst[mask] = new_class, new_id
    return _prune(scene.replace(label=label, inst=inst)), new_id


def add_object(scene: Scene, mask: np.ndarray, new_class: int, *, label_nc: Optional[int] = None,
               feature: Optional[np.ndarray] = None, cluster: Optional[int] = None) -> tuple[Scene, int]:
    """Paste a new object of `new_class` under `mask` (always a new instance id) -> (scene, its id)."""
    new_class = check_class(new_class, label_nc)
    mask = _check_mask(scene, mask)
    new_id = ops.next_object_id(scene.inst, new_class)
    label, inst = scene.label.copy(), scene.inst.copy()
    label[mask], inst[mask] = new_class, new_id
    features, clusters = dict(scene.features), dict(scene.clusters)
    if feature is not None:
        features[new_id], clusters[new_id] = check_vector(feature), cluster
    return _prune(scene.replace(label=label, inst=inst, features=features, clusters=clusters)), new_id


def set_feature(scene: Scene, inst_id: int, feature: np.ndarray, cluster: Optional[int] = None) -> Scene:
    class_of(scene, inst_id)
    features, clusters = dict(scene.features), dict(scene.clusters)
    features[int(inst_id)], clusters[int(inst_id)] = check_vector(feature), cluster
    return scene.replace(features=features, clusters=clusters)


def copy_feature(scene: Scene, src: int, dst: int) -> Scene:
    class_of(scene, src)
    if int(src) not in scene.features:
        raise KeyError(f"instance {src} has no feature yet")
    return set_feature(scene, dst, scene.features[int(src)], scene.clusters.get(int(src)))


def _with_maps(scene: Scene, maps: tuple[np.ndarray, np.ndarray]) -> Scene:
    return _prune(scene.replace(label=maps[0], inst=maps[1]))


def move_instance(scene: Scene, inst_id: int, dy: int, dx: int) -> Scene:
    """Shift instance `inst_id` by (dy, dx), in front of what it lands on; its feature stays."""
    return _with_maps(scene, ops.move_region(scene.label, scene.inst, int(inst_id), int(dy), int(dx)))


def delete_instance(scene: Scene, inst_id: int) -> Scene:
    return _with_maps(scene, ops.delete_region(scene.label, scene.inst, int(inst_id)))


def resize_instance(scene: Scene, inst_id: int, scale: float) -> Scene:
    return _with_maps(scene, ops.resize_region(scene.label, scene.inst, int(inst_id), scale))


def flip_instance(scene: Scene, inst_id: int) -> Scene:
    return _with_maps(scene, ops.flip_region(scene.label, scene.inst, int(inst_id)))
