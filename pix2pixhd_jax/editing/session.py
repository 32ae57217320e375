"""The editing session: an Editor over a Synthesizer (history, render, composite, the JSON vocabulary)."""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from pix2pixhd_jax.data import cityscapes as cs
from pix2pixhd_jax.editing import compositing, ops
from pix2pixhd_jax.editing.scene import (Scene, _check_class, add_object, check_rgb, check_vector, class_of,
                                         colour_feature, copy_feature, delete_instance, feature_map, flip_instance,
                                         move_instance, paint_region, relabel_instance, resize_instance, set_feature)

REGION_KEYS = ("rect", "circle", "brush", "mask")
OPS: dict[str, tuple[str, ...]] = {
    "relabel": ("instance", "at", "to"),
    "paint": ("class",) + REGION_KEYS,
    "add_object": ("class", "cluster", "vector") + REGION_KEYS,
    "set_feature": ("instance", "at", "cluster", "vector"),
    "set_colour": ("instance", "at", "rgb"),  # models trained with loss.lambda_feature_colour > 0
    "copy_feature": ("src", "dst"),
    "move": ("instance", "at", "by"),
    "delete": ("instance", "at"),
    "resize": ("instance", "at", "scale"),
    "flip": ("instance", "at"),
    "undo": (),
    "redo": (),
    "reset": (),
    "local": ("on",),  # a setting, not an edit: later edits composite locally (true) or not
}


@dataclasses.dataclass(frozen=True)
class EditResult:
    scene: Scene
    image: np.ndarray  # (H, W, 3) uint8
    region: Optional[int] = None  # the region the edit created or touched


class Editor:
    """Stateful editing session over a Synthesizer: each edit re-synthesizes; undo/redo/reset restore.

    History entries keep the image rendered for each scene, so undo and redo need no forward pass.
    `max_history` bounds the undo depth (oldest steps dropped; None = unbounded).

    `local` (default False: every edit shows the raw generator output) composites each new render
    into the current image: pixels within `local_margin_px` of what the edit changed take the new
    render, the next `local_feather_px` blend, the rest keep their bytes. The widths come from the
    config's `editing` section unless given here. `editor.local` can be switched at any time; it
    applies to the edits that follow.
    """

    def __init__(self, synthesizer, label: np.ndarray, inst: Optional[np.ndarray] = None, *, seed: Optional[int] = None,
                 thing_classes: Optional[Sequence[int]] = None, max_history: Optional[int] = None,
                 local: bool = False, local_margin_px: Optional[int] = None, local_feather_px: Optional[int] = None):
        self.synth = synthesizer
        cfg = synthesizer.config
        if cfg.model.label_feat:
            raise ValueError("the editor works per instance (model.instance_feat); this model pools per label region")
        # Configs saved before the editing section existed have none: local edits then need the
        # widths given here (or the config completed with today's defaults).
        section = cfg.get("editing") or {}
        self.local_margin_px = _px(local_margin_px, section, "local_margin_px")
        self.local_feather_px = _px(local_feather_px, section, "local_feather_px")
        self._local = False
        self.local = local
        self.label_nc = cfg.model.label_nc
        self.thing_classes = tuple(thing_classes if thing_classes is not None else
                                   (cfg.features.thing_classes or sorted(cs.THING_IDS)))
        self.seed = cfg.features.sample_seed if seed is None else seed
        self.max_history = max_history
        label = np.asarray(label, np.int32)
        inst = label.copy() if inst is None else np.asarray(inst, np.int32)
        if label.ndim != 2 or inst.shape != label.shape:
            raise ValueError(f"label {label.shape} and instance {inst.shape} maps must be (H, W) of one size")
        self._initial = self._fill_features(Scene(label, inst))
        self.scene = self._initial
        self.history: list[tuple[Scene, np.ndarray]] = []
        self.future: list[tuple[Scene, np.ndarray]] = []
        self.log: list[dict[str, Any]] = []  # every edit as JSON, for script()
        self._log_local: list[bool] = []  # the local setting each logged edit ran with
        self._json_edit: Optional[dict[str, Any]] = None  # the edit apply_edit is running
        self.render_seconds = 0.0
        self.image = self.render(self.scene)
        self._initial_image = self.image

    @property
    def local(self) -> bool:
        return self._local

    @local.setter
    def local(self, on: Any) -> None:
        if not isinstance(on, (bool, np.bool_)):
            raise ValueError(f"local must be true or false, got {on!r}")
        if on and (self.local_margin_px is None or self.local_feather_px is None):
            raise ValueError("local edits need editing.local_margin_px and editing.local_feather_px: this config "
                             "predates the editing section; load it with Synthesizer.from_workdir(..., "
                             "defaults=configs.default.get_config()) or pass local_margin_px= / local_feather_px=")
        self._local = bool(on)

    # Regions without a feature draw one from the bank with the same (seed, id) rule as synthesize().
    def _fill_features(self, scene: Scene) -> Scene:
        if not self.synth.uses_features:
            return scene
        missing = [i for i in ops.region_ids(scene.inst).tolist() if i not in scene.features]
        if not missing:
            return scene
        drawn = self.synth.region_features(scene.label, scene.inst, seed=self.seed)
        features, clusters = dict(scene.features), dict(scene.clusters)
        for i in missing:
            clusters[i], features[i] = drawn[i]
        return scene.replace(features=features, clusters=clusters)

    def render(self, scene: Scene) -> np.ndarray:
        """The image of `scene` (its own features); the wall time lands in render_seconds (0 after undo/redo)."""
        start = time.perf_counter()
        feats = None
        if self.synth.uses_features:
            feats = feature_map(scene.inst, scene.features)[None]
        image = np.asarray(self.synth.synthesize(scene.label[None], scene.inst[None], feats))[0]
        self.render_seconds = time.perf_counter() - start
        return image

    def _push(self, stack: list, entry: tuple[Scene, np.ndarray]) -> None:
        stack.append(entry)
        if self.max_history is not None and len(stack) > self.max_history:
            del stack[0]

    def _record(self, edit: dict[str, Any]) -> None:
        """Log an applied edit: the JSON apply_edit received, else the equivalent of a Python call."""
        self.log.append(self._json_edit if self._json_edit is not None else edit)
        self._log_local.append(self.local)

    def _composite(self, scene: Scene, image: np.ndarray) -> np.ndarray:
        """`image` (the render of `scene`) blended into the current image around what changed."""
        feats = None
        if self.synth.uses_features:
            feats = (feature_map(self.scene.inst, self.scene.features), feature_map(scene.inst, scene.features))
        changed = compositing.changed_region(self.scene.label, self.scene.inst, scene.label, scene.inst,
                                             *(feats or ()))
        return compositing.composite(self.image, image, changed, self.local_margin_px, self.local_feather_px)

    def _commit(self, scene: Scene, region: Optional[int], edit: dict[str, Any]) -> EditResult:
        scene = self._fill_features(scene)
        image = self.render(scene)
        if self.local:
            image = self._composite(scene, image)
        self._push(self.history, (self.scene, self.image))
        self.future.clear()
        self.scene, self.image = scene, image
        self._record(edit)
        return EditResult(self.scene, self.image, region)

    def _require_features(self, what: str) -> None:
        if not self.synth.uses_features:
            raise ValueError(f"{what} needs a model trained with instance features (model.instance_feat); "
                             "this one takes no appearance features")

    def _feature_of(self, class_id: int, cluster: Any, vector: Any) -> tuple[Optional[int], np.ndarray]:
        """(cluster, vector) for exactly one of cluster= / vector=."""
        if vector is not None:
            return None, check_vector(vector, self.synth.config.model.feat_num)
        cluster = ops.as_int(cluster, "cluster")
        return cluster, self.synth._require_bank().center(class_id, cluster)

    # The edit operations -----------------------------------------------------------
    def relabel(self, inst_id: int, new_class: int) -> EditResult:
        scene, new_id = relabel_instance(self.scene, inst_id, new_class, thing_classes=self.thing_classes,
                                         label_nc=self.label_nc)
        return self._commit(scene, new_id, {"op": "relabel", "instance": int(inst_id), "to": int(new_class)})

    def paint(self, mask: np.ndarray, new_class: int) -> EditResult:
        scene, region = paint_region(self.scene, mask, new_class, thing_classes=self.thing_classes, label_nc=self.label_nc)
        return self._commit(scene, region, {"op": "paint", "class": int(new_class), "mask": None})

    def add_object(self, mask: np.ndarray, new_class: int, *, cluster: Optional[int] = None, vector=None) -> EditResult:
        feature = None
        if cluster is not None and vector is not None:
            raise ValueError("add_object takes at most one of cluster= or vector=")
        if cluster is not None or vector is not None:
            self._require_features("an object's cluster or vector")
            cluster, feature = self._feature_of(_check_class(new_class, self.label_nc), cluster, vector)
        scene, new_id = add_object(self.scene, mask, new_class, label_nc=self.label_nc, feature=feature, cluster=cluster)
        edit = {"op": "add_object", "class": int(new_class), "mask": None}
        if feature is not None:
            edit.update({"cluster": cluster} if cluster is not None else {"vector": feature.tolist()})
        return self._commit(scene, new_id, edit)

    def set_feature(self, inst_id: int, *, cluster: Optional[int] = None, vector=None) -> EditResult:
        self._require_features("set_feature")
        if (cluster is None) == (vector is None):
            raise ValueError("set_feature needs exactly one of cluster= or vector=")
        c, v = self._feature_of(class_of(self.scene, inst_id), cluster, vector)
        edit = {"op": "set_feature", "instance": int(inst_id)}
        edit.update({"cluster": c} if c is not None else {"vector": v.tolist()})
        return self._commit(set_feature(self.scene, inst_id, v, c), inst_id, edit)

    def set_colour(self, inst_id: int, rgb) -> EditResult:
        """Ask a colour-anchored model (Synthesizer.colour_features) for an instance's colour, rgb 0..255."""
        self._require_features("set_colour")
        if not self.synth.colour_features:  # the weight is validated >= 0, so not anchored means 0
            raise ValueError("this model's features are not anchored to colour (loss.lambda_feature_colour=0): "
                             "pick a cluster or a vector instead")
        class_of(self.scene, inst_id)
        rgb = check_rgb(rgb)
        vector = colour_feature(rgb, self.scene.features[int(inst_id)])
        edit = {"op": "set_colour", "instance": int(inst_id), "rgb": rgb.tolist()}
        return self._commit(set_feature(self.scene, inst_id, vector), inst_id, edit)

    def copy_feature(self, src: int, dst: int) -> EditResult:
        self._require_features("copy_feature")
        return self._commit(copy_feature(self.scene, src, dst), dst, {"op": "copy_feature", "src": int(src), "dst": int(dst)})

    def move(self, inst_id: int, dy: int, dx: int) -> EditResult:
        return self._commit(move_instance(self.scene, inst_id, dy, dx), inst_id,
                            {"op": "move", "instance": int(inst_id), "by": [int(dy), int(dx)]})

    def delete(self, inst_id: int) -> EditResult:
        return self._commit(delete_instance(self.scene, inst_id), None, {"op": "delete", "instance": int(inst_id)})

    def resize(self, inst_id: int, scale: float) -> EditResult:
        return self._commit(resize_instance(self.scene, inst_id, scale), inst_id,
                            {"op": "resize", "instance": int(inst_id), "scale": float(scale)})

    def flip(self, inst_id: int) -> EditResult:
        return self._commit(flip_instance(self.scene, inst_id), inst_id, {"op": "flip", "instance": int(inst_id)})

    def _travel(self, source: list, target: list, op: str) -> EditResult:
        """Undo (history -> future) or redo (future -> history): the stored maps and image, no render."""
        if not source:
            raise IndexError(f"nothing to {op}")
        self._push(target, (self.scene, self.image))
        self.scene, self.image = source.pop()
        self.render_seconds = 0.0
        self._record({"op": op})
        return EditResult(self.scene, self.image)

    def undo(self) -> EditResult:
        return self._travel(self.history, self.future, "undo")

    def redo(self) -> EditResult:
        return self._travel(self.future, self.history, "redo")

    def reset(self) -> EditResult:
        self._push(self.history, (self.scene, self.image))
        self.future.clear()
        self.scene, self.image = self._initial, self._initial_image
        self.render_seconds = 0.0
        self._record({"op": "reset"})
        return EditResult(self.scene, self.image)

    # Scripts ----------------------------------------------------------------------------
    def apply_script(self, script: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                     mask_loader: Optional[Callable[[str], np.ndarray]] = None) -> list[EditResult]:
        """Apply a JSON edit script (a list of edits, or {"edits": [...]}) -> one result per edit.

        A top-level "local": true / false sets `local` before the first edit.
        """
        edits = script.get("edits") if isinstance(script, Mapping) else script
        if not isinstance(edits, (list, tuple)):
            raise ValueError(f"an edit script is a list of edits or {{\"edits\": [...]}}; got edits={str(edits)[:80]}")
        if isinstance(script, Mapping) and "local" in script:
            self.local = script["local"]
        return [self.apply_edit(e, mask_loader, index=i) for i, e in enumerate(edits)]

    def apply_edit(self, edit: Mapping[str, Any], mask_loader: Optional[Callable[[str], np.ndarray]] = None, *,
                   index: Optional[int] = None) -> EditResult:
        """Apply one edit of the JSON vocabulary (OPS); errors are ValueErrors naming the edit."""
        where = f"edit {index}" if index is not None else "edit"
        try:
            if not isinstance(edit, Mapping):
                raise ValueError(f"an edit is a JSON object with an 'op', got {str(edit)[:80]}")
            self._json_edit = json.loads(json.dumps(dict(edit), default=_jsonable))
            return self._dispatch(edit, mask_loader)
        except (KeyError, ValueError, IndexError, TypeError, ArithmeticError) as e:
            message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            raise ValueError(f"{where} ({_short(edit)}): {message}") from e
        finally:
            self._json_edit = None

    def script(self) -> dict[str, Any]:
        """{"seed", "local", "edits"}: replays this session with apply_script (or the edit CLI) on the same scene.

        Every edit is logged, Python calls included, except that a mask array given to paint /
        add_object from Python has no JSON form: such a session raises here. "local" is the
        setting of the first edit; a later switch appears as {"op": "local", "on": ...}.
        """
        for i, edit in enumerate(self.log):
            if edit.get("mask", "") is None:
                raise ValueError(f"edit {i} ({edit['op']}) was given a mask array from Python; a script holds "
                                 "regions as rect, circle, brush or a mask file, so this session cannot be replayed")
        first = self._log_local[0] if self._log_local else self.local
        edits, current = [], first
        for edit, local in zip(self.log, self._log_local):
            if local != current:
                edits.append({"op": "local", "on": local})
                current = local
            edits.append(dict(edit))
        return {"seed": self.seed, "local": first, "edits": edits}

    def _dispatch(self, edit: Mapping[str, Any], mask_loader) -> EditResult:
        op = edit.get("op")
        if not isinstance(op, str) or op not in OPS:
            raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")
        unknown = sorted(set(edit) - set(OPS[op]) - {"op"})
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} for op {op!r}; it takes {list(OPS[op])}")
        if op == "relabel":
            return self.relabel(self._instance(edit), _class_id(_get(edit, "to")))
        if op == "paint":
            return self.paint(self._mask(edit, mask_loader), _class_id(_get(edit, "class")))
        if op == "add_object":
            return self.add_object(self._mask(edit, mask_loader), _class_id(_get(edit, "class")),
                                   cluster=edit.get("cluster"), vector=edit.get("vector"))
        if op == "set_feature":
            return self.set_feature(self._instance(edit), cluster=edit.get("cluster"), vector=edit.get("vector"))
        if op == "set_colour":
            return self.set_colour(self._instance(edit), _get(edit, "rgb"))
        if op == "copy_feature":
            return self.copy_feature(self._instance(edit, "src"), self._instance(edit, "dst"))
        if op == "move":
            dy, dx = _pair_of_ints(_get(edit, "by"), "by [dy, dx]")
            return self.move(self._instance(edit), dy, dx)
        if op == "delete":
            return self.delete(self._instance(edit))
        if op == "resize":
            return self.resize(self._instance(edit), ops.as_float(_get(edit, "scale"), "scale"))
        if op == "flip":
            return self.flip(self._instance(edit))
        if op == "local":
            self.local = _get(edit, "on")
            self.render_seconds = 0.0
            return EditResult(self.scene, self.image)
        return {"undo": self.undo, "redo": self.redo, "reset": self.reset}[op]()

    def _instance(self, edit: Mapping[str, Any], key: str = "instance") -> int:
        """An instance by id, or by a pixel: {"instance": 26001} or {"instance": {"at": [y, x]}}."""
        ref = edit.get(key)
        if ref is None and key == "instance" and "at" in edit:
            ref = {"at": edit["at"]}
        if ref is None:
            raise KeyError(f"missing {key!r} (an instance id, or {{\"at\": [y, x]}})")
        if isinstance(ref, Mapping):
            if set(ref) != {"at"}:
                raise ValueError(f"{key} must be an id or {{\"at\": [y, x]}}, got {str(dict(ref))[:80]}")
            return self.scene.instance_at(*_pair_of_ints(ref["at"], "at [y, x]"))
        inst_id = ops.as_int(ref, key)
        ops.region_mask(self.scene.inst, inst_id)
        return inst_id

    def _mask(self, edit: Mapping[str, Any], mask_loader) -> np.ndarray:
        shape = self.scene.label.shape
        given = [k for k in REGION_KEYS if k in edit]
        if len(given) != 1:
            raise KeyError("give the region as exactly one of 'rect': [y0, x0, y1, x1], 'circle': [y, x, r], "
                           "'brush': {\"radius\": r, \"points\": [[y, x], ...]} or 'mask': 'file.png'")
        if "rect" in edit:  # [y0, x0, y1, x1], end-exclusive
            return ops.rect_mask(shape, edit["rect"])
        if "circle" in edit:  # [y, x, radius]: the official brush is a square; a disc paints rounder strokes
            return ops.disc_mask(shape, edit["circle"])
        if "brush" in edit:
            return ops.brush_mask(shape, edit["brush"])
        if mask_loader is None:
            raise ValueError("a mask file needs a mask_loader (the CLI reads PNGs relative to the script)")
        return np.asarray(mask_loader(edit["mask"])) > 0


def _px(given: Optional[int], section: Mapping[str, Any], key: str) -> Optional[int]:
    """A compositing width: the keyword if given, else the config's editing.<key> (None when absent)."""
    if given is not None:
        return compositing.check_px(given, key)
    value = section.get(key)
    return None if value is None else compositing.check_px(value, f"editing.{key}")


def _get(edit: Mapping[str, Any], key: str) -> Any:
    if key not in edit:
        raise KeyError(f"missing {key!r}")
    return edit[key]


def _pair_of_ints(value: Any, what: str) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{what} must be two integers, got {value!r}")
    return ops.as_int(value[0], what), ops.as_int(value[1], what)


def _short(edit: Any) -> str:
    try:
        return json.dumps(edit, default=_jsonable)[:120]
    except (TypeError, ValueError):
        return repr(edit)[:120]


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _class_id(value: Any) -> int:
    """A class as an id or a Cityscapes name ('car', 'vegetation')."""
    if isinstance(value, str):
        if value not in cs.NAME_TO_ID:
            raise KeyError(f"unknown class name {value!r}; Cityscapes names: {sorted(cs.NAME_TO_ID)}")
        return cs.NAME_TO_ID[value]
    return ops.as_int(value, "class (an id or a Cityscapes name)")
