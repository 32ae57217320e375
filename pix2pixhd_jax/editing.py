"""Object-level editing (the operations of pix2pixHD's editing demo, without a GUI toolkit).

A `Scene` is a label map, an instance map and one feature vector per region. Pure functions
return a new Scene for each edit:

  relabel_instance  an object becomes another class (new instance id class*1000 + max k + 1 for
                    thing classes, the stuff id otherwise); its feature is copied (official)
  paint_region      pixels under a mask take a class (stuff merges into that class's region;
                    a thing class becomes one new object)
  add_object        a new object of a class from a mask, with a chosen cluster or feature
  set_feature       an instance's feature vector (or a bank cluster via the Editor)
  copy_feature      one instance's feature onto another

Boundaries are never stored: they are recomputed from the instance map by `Scene.edges()` and by
the generator input encoding. `Editor` wraps a Synthesizer: every edit returns the new scene and
the re-synthesized image, keeps a history for `undo`, and `apply_script` runs a JSON edit script
(see `run_script` for its format). CLI: `python -m pix2pixhd_jax.edit --workdir W --script s.json --out DIR`.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from pix2pixhd_jax.data import cityscapes as cs

INSTANCE_OFFSET = cs.INSTANCE_ID_OFFSET  # Cityscapes convention: id >= 1000 is class * 1000 + k


@dataclasses.dataclass(frozen=True)
class Scene:
    """label (H, W) int32, inst (H, W) int32, region id -> feature vector (F,), region id -> cluster."""

    label: np.ndarray
    inst: np.ndarray
    features: Mapping[int, np.ndarray] = dataclasses.field(default_factory=dict)
    clusters: Mapping[int, Optional[int]] = dataclasses.field(default_factory=dict)

    def edges(self) -> np.ndarray:
        """(H, W) float32 boundary map: 1 where a pixel's instance differs from a 4-neighbour (as G sees it)."""
        return numpy_edges(self.inst)

    def instance_at(self, y: int, x: int) -> int:
        h, w = self.inst.shape
        if not (0 <= y < h and 0 <= x < w):
            raise IndexError(f"pixel ({y}, {x}) is outside the {h}x{w} map")
        return int(self.inst[y, x])

    def instances(self) -> list[int]:
        return np.unique(self.inst).tolist()

    def replace(self, **kw) -> "Scene":
        return dataclasses.replace(self, **kw)


def numpy_edges(inst: np.ndarray) -> np.ndarray:
    """Host twin of semantics.instance_edges for one (H, W) map."""
    inst = np.asarray(inst)
    edge = np.zeros(inst.shape, bool)
    dx, dy = inst[:, 1:] != inst[:, :-1], inst[1:] != inst[:-1]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:] |= dy
    edge[:-1] |= dy
    return edge.astype(np.float32)


def class_of(scene: Scene, inst_id: int) -> int:
    mask = scene.inst == inst_id
    if not mask.any():
        raise KeyError(f"instance {inst_id} is not in the map; instances present: {scene.instances()[:40]}")
    return int(scene.label[mask][0])


def new_instance_id(inst: np.ndarray, class_id: int, thing_classes: Sequence[int]) -> int:
    """Official change_labels rule: a thing class gets class*1000 + (max k of that class + 1); stuff its class id."""
    class_id = int(class_id)
    existing = inst[(inst >= class_id * INSTANCE_OFFSET) & (inst < (class_id + 1) * INSTANCE_OFFSET)]
    if class_id in set(thing_classes) or existing.size:
        return class_id * INSTANCE_OFFSET + (int(existing.max()) % INSTANCE_OFFSET + 1 if existing.size else 0)
    return class_id


def _check_class(class_id: int, label_nc: Optional[int]) -> int:
    class_id = int(class_id)
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


def _prune(scene: Scene) -> Scene:
    """Drop features of regions that no longer exist."""
    present = set(np.unique(scene.inst).tolist())
    return scene.replace(features={k: v for k, v in scene.features.items() if k in present},
                         clusters={k: v for k, v in scene.clusters.items() if k in present})


def relabel_instance(scene: Scene, inst_id: int, new_class: int, *, thing_classes: Sequence[int],
                     label_nc: Optional[int] = None) -> tuple[Scene, int]:
    """Turn instance `inst_id` into class `new_class` -> (scene, new instance id); the feature is copied."""
    new_class = _check_class(new_class, label_nc)
    class_of(scene, inst_id)
    mask = scene.inst == inst_id
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
    new_class = _check_class(new_class, label_nc)
    mask = _check_mask(scene, mask)
    new_id = new_instance_id(scene.inst, new_class, thing_classes)
    label, inst = scene.label.copy(), scene.inst.copy()
    label[mask], inst[mask] = new_class, new_id
    return _prune(scene.replace(label=label, inst=inst)), new_id


def add_object(scene: Scene, mask: np.ndarray, new_class: int, *, label_nc: Optional[int] = None,
               feature: Optional[np.ndarray] = None, cluster: Optional[int] = None) -> tuple[Scene, int]:
    """Paste a new object of `new_class` under `mask` (always a new instance id) -> (scene, its id)."""
    new_class = _check_class(new_class, label_nc)
    mask = _check_mask(scene, mask)
    existing = scene.inst[(scene.inst >= new_class * INSTANCE_OFFSET) & (scene.inst < (new_class + 1) * INSTANCE_OFFSET)]
    new_id = new_class * INSTANCE_OFFSET + (int(existing.max()) % INSTANCE_OFFSET + 1 if existing.size else 0)
    label, inst = scene.label.copy(), scene.inst.copy()
    label[mask], inst[mask] = new_class, new_id
    features, clusters = dict(scene.features), dict(scene.clusters)
    if feature is not None:
        features[new_id], clusters[new_id] = np.asarray(feature, np.float32), cluster
    return _prune(scene.replace(label=label, inst=inst, features=features, clusters=clusters)), new_id


def set_feature(scene: Scene, inst_id: int, feature: np.ndarray, cluster: Optional[int] = None) -> Scene:
    class_of(scene, inst_id)
    features, clusters = dict(scene.features), dict(scene.clusters)
    features[int(inst_id)], clusters[int(inst_id)] = np.asarray(feature, np.float32), cluster
    return scene.replace(features=features, clusters=clusters)


def copy_feature(scene: Scene, src: int, dst: int) -> Scene:
    class_of(scene, src)
    if int(src) not in scene.features:
        raise KeyError(f"instance {src} has no feature yet")
    return set_feature(scene, dst, scene.features[int(src)], scene.clusters.get(int(src)))


# ----------------------------------------------------------------------------- editor


@dataclasses.dataclass(frozen=True)
class EditResult:
    scene: Scene
    image: np.ndarray  # (H, W, 3) uint8
    region: Optional[int] = None  # the region the edit created or touched


class Editor:
    """Stateful editing session over a Synthesizer: each edit re-synthesizes; undo/reset restore."""

    def __init__(self, synthesizer, label: np.ndarray, inst: Optional[np.ndarray] = None, *, seed: Optional[int] = None,
                 thing_classes: Optional[Sequence[int]] = None):
        self.synth = synthesizer
        cfg = synthesizer.config
        if cfg.model.label_feat:
            raise ValueError("the editor works per instance (model.instance_feat); this model pools per label region")
        self.label_nc = cfg.model.label_nc
        self.thing_classes = tuple(thing_classes if thing_classes is not None else
                                   (cfg.features.thing_classes or sorted(cs.THING_IDS)))
        self.seed = cfg.features.sample_seed if seed is None else seed
        label = np.asarray(label, np.int32)
        inst = label.copy() if inst is None else np.asarray(inst, np.int32)
        self._initial = self._fill_features(Scene(label, inst))
        self.scene = self._initial
        self.history: list[Scene] = []
        self.image = self.render(self.scene)

    # Regions without a feature draw one from the bank with the same (seed, id) rule as synthesize().
    def _fill_features(self, scene: Scene) -> Scene:
        if not self.synth.uses_features:
            return scene
        missing = [i for i in np.unique(scene.inst).tolist() if i not in scene.features]
        if not missing:
            return scene
        drawn = self.synth.region_features(scene.label, scene.inst, seed=self.seed)
        features, clusters = dict(scene.features), dict(scene.clusters)
        for i in missing:
            clusters[i], features[i] = drawn[i]
        return scene.replace(features=features, clusters=clusters)

    def render(self, scene: Scene) -> np.ndarray:
        feats = None
        if self.synth.uses_features:
            feats = self.synth.feature_map(scene.label, scene.inst, scene.features)[None]
        return np.asarray(self.synth.synthesize(scene.label[None], scene.inst[None], feats))[0]

    def _commit(self, scene: Scene, region: Optional[int] = None) -> EditResult:
        self.history.append(self.scene)
        self.scene = self._fill_features(scene)
        self.image = self.render(self.scene)
        return EditResult(self.scene, self.image, region)

    def _feature_of(self, inst_id: int, cluster: Optional[int], vector) -> tuple[Optional[int], np.ndarray]:
        if vector is not None:
            return None, np.asarray(vector, np.float32)
        cls = class_of(self.scene, inst_id)
        return int(cluster), self.synth._require_bank().center(cls, int(cluster))

    # The edit operations -----------------------------------------------------------
    def relabel(self, inst_id: int, new_class: int) -> EditResult:
        scene, new_id = relabel_instance(self.scene, inst_id, new_class, thing_classes=self.thing_classes,
                                         label_nc=self.label_nc)
        return self._commit(scene, new_id)

    def paint(self, mask: np.ndarray, new_class: int) -> EditResult:
        scene, region = paint_region(self.scene, mask, new_class, thing_classes=self.thing_classes, label_nc=self.label_nc)
        return self._commit(scene, region)

    def add_object(self, mask: np.ndarray, new_class: int, *, cluster: Optional[int] = None, vector=None) -> EditResult:
        feature = None
        if vector is not None:
            feature = np.asarray(vector, np.float32)
        elif cluster is not None:
            feature = self.synth._require_bank().center(new_class, cluster)
        scene, new_id = add_object(self.scene, mask, new_class, label_nc=self.label_nc, feature=feature, cluster=cluster)
        return self._commit(scene, new_id)

    def set_feature(self, inst_id: int, *, cluster: Optional[int] = None, vector=None) -> EditResult:
        if (cluster is None) == (vector is None):
            raise ValueError("set_feature needs exactly one of cluster= or vector=")
        c, v = self._feature_of(inst_id, cluster, vector)
        if v.shape != (self.synth.config.model.feat_num,):
            raise ValueError(f"feature vector has shape {v.shape}; model.feat_num={self.synth.config.model.feat_num}")
        return self._commit(set_feature(self.scene, inst_id, v, c), inst_id)

    def copy_feature(self, src: int, dst: int) -> EditResult:
        return self._commit(copy_feature(self.scene, src, dst), dst)

    def undo(self) -> EditResult:
        if not self.history:
            raise IndexError("nothing to undo")
        self.scene = self.history.pop()
        self.image = self.render(self.scene)
        return EditResult(self.scene, self.image)

    def reset(self) -> EditResult:
        self.history.append(self.scene)
        self.scene = self._initial
        self.image = self.render(self.scene)
        return EditResult(self.scene, self.image)

    # Scripts ----------------------------------------------------------------------------
    def apply_script(self, script: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                     mask_loader=None) -> list[EditResult]:
        """Apply a JSON edit script (a list of edits, or {"edits": [...]}) -> one result per edit."""
        edits = script["edits"] if isinstance(script, Mapping) else script
        return [self._apply_one(i, e, mask_loader) for i, e in enumerate(edits)]

    def _apply_one(self, index: int, edit: Mapping[str, Any], mask_loader) -> EditResult:
        def where() -> str:
            return f"edit {index} ({json.dumps(edit)[:120]})"

        try:
            op = edit["op"]
            if op == "relabel":
                return self.relabel(self._instance(edit), _class_id(edit["to"]))
            if op == "paint":
                return self.paint(self._mask(edit, mask_loader), _class_id(edit["class"]))
            if op == "add_object":
                return self.add_object(self._mask(edit, mask_loader), _class_id(edit["class"]),
                                       cluster=edit.get("cluster"), vector=edit.get("vector"))
            if op == "set_feature":
                return self.set_feature(self._instance(edit), cluster=edit.get("cluster"), vector=edit.get("vector"))
            if op == "copy_feature":
                return self.copy_feature(self._instance(edit, "src"), self._instance(edit, "dst"))
            if op == "undo":
                return self.undo()
            if op == "reset":
                return self.reset()
            raise ValueError(f"unknown op {op!r}; ops: relabel, paint, add_object, set_feature, copy_feature, undo, reset")
        except (KeyError, ValueError, IndexError, TypeError) as e:
            raise ValueError(f"{where()}: {e}") from e

    def _instance(self, edit: Mapping[str, Any], key: str = "instance") -> int:
        """An instance by id, or by a pixel: {"instance": 26001} or {"instance": {"at": [y, x]}}."""
        ref = edit.get(key)
        if ref is None and key == "instance" and "at" in edit:
            ref = {"at": edit["at"]}
        if ref is None:
            raise KeyError(f"missing {key!r} (an instance id, or {{\"at\": [y, x]}})")
        if isinstance(ref, Mapping):
            return self.scene.instance_at(*ref["at"])
        return int(ref)

    def _mask(self, edit: Mapping[str, Any], mask_loader) -> np.ndarray:
        h, w = self.scene.label.shape
        mask = np.zeros((h, w), bool)
        if "rect" in edit:  # [y0, x0, y1, x1], end-exclusive
            y0, x0, y1, x1 = (int(v) for v in edit["rect"])
            mask[max(0, y0):y1, max(0, x0):x1] = True
        elif "circle" in edit:  # [y, x, radius]: the official brush is a square; a disc paints rounder strokes
            cy, cx, r = edit["circle"]
            yy, xx = np.mgrid[:h, :w]
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        elif "mask" in edit:
            if mask_loader is None:
                raise ValueError("a mask file needs a mask_loader (the CLI reads PNGs relative to the script)")
            mask = np.asarray(mask_loader(edit["mask"])) > 0
        else:
            raise KeyError("give the region as 'rect': [y0, x0, y1, x1], 'circle': [y, x, r] or 'mask': 'file.png'")
        return mask


def _class_id(value: Any) -> int:
    """A class as an id or a Cityscapes name ('car', 'vegetation')."""
    if isinstance(value, str):
        if value not in cs.NAME_TO_ID:
            raise KeyError(f"unknown class name {value!r}; Cityscapes names: {sorted(cs.NAME_TO_ID)}")
        return cs.NAME_TO_ID[value]
    return int(value)
