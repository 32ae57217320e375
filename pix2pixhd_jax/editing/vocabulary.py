"""The edit vocabulary: the JSON ops (OPS), their parsing and dispatch, typed edits, script export.

One vocabulary is shared by edit scripts, the `edit` CLI and the editor's HTTP API. An edit is a
JSON object with an "op" and the keys OPS lists for it, e.g.
  {"op": "move", "instance": 26001, "by": [0, 12]}
  {"op": "paint", "class": "road", "rect": [100, 0, 128, 60]}
An instance is an id or a pixel ({"at": [y, x]}); a class an id or a Cityscapes name; a region
exactly one of rect / circle / brush / mask (a PNG a script names, read by its mask_loader).

`Editor` is an `EditSession` that speaks this vocabulary: its typed methods (relabel, paint,
add_object, set_feature, set_colour, copy_feature, move, delete, resize, flip) build the same
JSON edit that `apply_edit` takes, so both paths run one dispatch and log one record; `script()`
returns the edits applied so far as a script that replays the session.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from pix2pixhd_jax.data import cityscapes as cs
from pix2pixhd_jax.editing import ops
from pix2pixhd_jax.editing.scene import (Scene, add_object, check_class, class_of,
                                         copy_feature, delete_instance, flip_instance, move_instance, paint_region,
                                         relabel_instance, resize_instance, set_feature)
from pix2pixhd_jax.editing.session import EditResult, EditSession

REGION_KEYS = ("rect", "circle", "brush", "polygon", "fill", "mask")
OPS: dict[str, tuple[str, ...]] = {  # op -> keys it accepts (one of the region keys for paint / add_object)
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
HISTORY_OPS = ("undo", "redo", "reset")
MaskLoader = Callable[[str], np.ndarray]
Script = Union[Mapping[str, Any], Sequence[Mapping[str, Any]]]
# Edits nest a few levels (a script's brush: {"edits": [{"brush": {"points": [[y, x]]}}]} is 5 deep);
# far deeper JSON is refused when parsed, before code that walks it recursively can overflow the stack.
MAX_JSON_DEPTH = 32


def parse_json(text: Union[str, bytes], what: str = "the edit script") -> Any:
    """JSON text -> Python values; malformed or too deeply nested text raises one ValueError naming `what`."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(_too_deep(what)) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} must be JSON ({e})") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(_too_deep(what))
    return value


def json_depth(value: Any) -> int:
    """How deeply lists and dicts nest in `value` (0 for a scalar); iterative, so any depth is safe."""
    containers = (list, tuple, dict)
    if not isinstance(value, containers):
        return 0
    deepest, stack = 1, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, containers))
    return deepest


def _too_deep(what: str) -> str:
    return f"{what} nests arrays or objects too deeply (an edit script nests at most {MAX_JSON_DEPTH} levels)"


class Editor(EditSession):
    """An editing session (EditSession) that takes edits as typed calls, JSON edits or whole scripts.

    objects_only=True (the editor server's setting) refuses move / delete / resize / flip of a stuff
    region (id < 1000): removing or shifting the road leaves a scene no label map looks like.
    """

    def __init__(self, *args: Any, objects_only: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.objects_only = bool(objects_only)

    def require_object(self, inst_id: int, op: str) -> None:
        """With objects_only, `op` is refused for stuff regions, with what to do instead."""
        if self.objects_only and inst_id < 1000:
            name = cs.ID_TO_NAME.get(int(inst_id), f"class {int(inst_id)}")
            raise ValueError(f"region {inst_id} ({name}) is a stuff region, not an object instance: {op} is for "
                             "objects (ids >= 1000, e.g. a car); paint over the region with another class instead")

    # Typed edits: each builds the JSON edit and runs it (errors are raised as they are) --------
    def relabel(self, inst_id: int, new_class: int) -> EditResult:
        return self._run({"op": "relabel", "instance": inst_id, "to": new_class})

    def paint(self, mask: np.ndarray, new_class: int) -> EditResult:
        """Paint a boolean (H, W) mask; a session with such an edit has no script (an array is not JSON)."""
        return self._run({"op": "paint", "class": new_class, "mask": np.asarray(mask)})

    def add_object(self, mask: np.ndarray, new_class: int, *, cluster: Optional[int] = None, vector=None) -> EditResult:
        return self._run({"op": "add_object", "class": new_class, "mask": np.asarray(mask),
                          **_given(cluster=cluster, vector=vector)})

    def set_feature(self, inst_id: int, *, cluster: Optional[int] = None, vector=None) -> EditResult:
        return self._run({"op": "set_feature", "instance": inst_id, **_given(cluster=cluster, vector=vector)})

    def set_colour(self, inst_id: int, rgb) -> EditResult:
        """Ask a colour-anchored model (Synthesizer.colour_features) for an instance's colour, rgb 0..255."""
        return self._run({"op": "set_colour", "instance": inst_id, "rgb": rgb})

    def copy_feature(self, src: int, dst: int) -> EditResult:
        return self._run({"op": "copy_feature", "src": src, "dst": dst})

    def move(self, inst_id: int, dy: int, dx: int) -> EditResult:
        return self._run({"op": "move", "instance": inst_id, "by": [dy, dx]})

    def delete(self, inst_id: int) -> EditResult:
        return self._run({"op": "delete", "instance": inst_id})

    def resize(self, inst_id: int, scale: float) -> EditResult:
        return self._run({"op": "resize", "instance": inst_id, "scale": scale})

    def flip(self, inst_id: int) -> EditResult:
        return self._run({"op": "flip", "instance": inst_id})

    # JSON edits and scripts -----------------------------------------------------------------
    def apply_script(self, script: Script, mask_loader: Optional[MaskLoader] = None) -> list[EditResult]:
        """Apply a JSON edit script (a list of edits, or {"edits": [...]}) -> one result per edit.

        A top-level "local": true / false sets `local` before the first edit.
        """
        edits = script.get("edits") if isinstance(script, Mapping) else script
        if not isinstance(edits, (list, tuple)):
            raise ValueError(f"an edit script is a list of edits or {{\"edits\": [...]}}; got edits={str(edits)[:80]}")
        if isinstance(script, Mapping) and "local" in script:
            self.local = script["local"]
        return [self.apply_edit(e, mask_loader, index=i) for i, e in enumerate(edits)]

    def apply_edit(self, edit: Mapping[str, Any], mask_loader: Optional[MaskLoader] = None, *,
                   index: Optional[int] = None) -> EditResult:
        """Apply one edit of the JSON vocabulary (OPS); errors are ValueErrors naming the edit."""
        where = f"edit {index}" if index is not None else "edit"
        try:
            if not isinstance(edit, Mapping):
                raise ValueError(f"an edit is a JSON object with an 'op', got {_short(edit)}")
            return self._run(edit, mask_loader)
        except RecursionError:  # a Python caller's value nested deeper than any JSON parse_json accepts
            raise ValueError(f"{where}: {_too_deep('the edit')}") from None
        except (KeyError, ValueError, IndexError, TypeError, ArithmeticError) as e:
            message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            raise ValueError(f"{where} ({_short(edit)}): {message}") from e

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
        first = self.log_local[0] if self.log_local else self.local
        edits, current = [], first
        for edit, local in zip(self.log, self.log_local):
            if local != current:
                edits.append({"op": "local", "on": local})
                current = local
            edits.append(dict(edit))
        return {"seed": self.seed, "local": first, "edits": edits}

    # Dispatch ---------------------------------------------------------------------------------
    def _run(self, edit: Mapping[str, Any], mask_loader: Optional[MaskLoader] = None) -> EditResult:
        """Check `edit` against OPS, apply it and log it as received (mask arrays logged as None)."""
        op = edit.get("op")
        if not isinstance(op, str) or op not in OPS:
            raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")
        unknown = sorted(set(edit) - set(OPS[op]) - {"op"})
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} for op {op!r}; it takes {list(OPS[op])}")
        if op in HISTORY_OPS:
            return getattr(self, op)()
        if op == "local":  # not logged: script() writes a switch before the first edit it applies to
            self.local = _get(edit, "on")
            return EditResult(self.scene, self.image)
        scene, region = _CHANGES[op](self, edit, mask_loader)
        return self.commit(scene, region, _record(edit))

    def instance_of(self, edit: Mapping[str, Any], key: str = "instance") -> int:
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

    def region_of(self, edit: Mapping[str, Any], mask_loader: Optional[MaskLoader]) -> np.ndarray:
        """The (H, W) bool region of a paint / add_object edit."""
        shape = self.scene.label.shape
        given = [k for k in REGION_KEYS if k in edit]
        if len(given) != 1:
            raise KeyError("give the region as exactly one of 'rect': [y0, x0, y1, x1], 'circle': [y, x, r], "
                           "'brush': {\"radius\": r, \"points\": [[y, x], ...]}, 'polygon': [[y, x], ...], "
                           "'fill': [y, x] or 'mask': 'file.png'")
        if "rect" in edit:  # [y0, x0, y1, x1], end-exclusive
            return ops.rect_mask(shape, edit["rect"])
        if "circle" in edit:  # [y, x, radius]: the official brush is a square; a disc paints rounder strokes
            return ops.disc_mask(shape, edit["circle"])
        if "brush" in edit:
            return ops.brush_mask(shape, edit["brush"])
        if "polygon" in edit:  # [[y, x], ...]: the closed polygon's inside and outline
            return ops.polygon_mask(shape, edit["polygon"])
        if "fill" in edit:  # [y, x]: the connected part of the region under the pixel (flood fill)
            return ops.fill_mask(self.scene.inst, edit["fill"])
        if isinstance(edit["mask"], np.ndarray):  # from Python (paint / add_object); never from JSON
            return edit["mask"]
        if mask_loader is None:
            raise ValueError("a mask file needs a mask_loader (the CLI reads PNGs relative to the script)")
        return np.asarray(mask_loader(edit["mask"])) > 0


# ----------------------------------------------------------------------------- one function per op
# Each takes the editor, the checked edit and the mask loader and returns (new scene, region touched).
Change = tuple[Scene, Optional[int]]


def _relabel(ed: Editor, edit: Mapping[str, Any], mask_loader) -> Change:
    return relabel_instance(ed.scene, ed.instance_of(edit), _class_id(_get(edit, "to")), thing_classes=ed.thing_classes,
                            label_nc=ed.label_nc)


def _paint(ed: Editor, edit: Mapping[str, Any], mask_loader) -> Change:
    return paint_region(ed.scene, ed.region_of(edit, mask_loader), _class_id(_get(edit, "class")),
                        thing_classes=ed.thing_classes, label_nc=ed.label_nc)


def _add_object(ed: Editor, edit: Mapping[str, Any], mask_loader) -> Change:
    mask, new_class = ed.region_of(edit, mask_loader), _class_id(_get(edit, "class"))
    cluster, vector, feature = edit.get("cluster"), edit.get("vector"), None
    if cluster is not None and vector is not None:
        raise ValueError("add_object takes at most one of cluster= or vector=")
    if cluster is not None or vector is not None:
        ed.require_features("an object's cluster or vector")
        cluster, feature = ed.feature_of(check_class(new_class, ed.label_nc), cluster, vector)
    return add_object(ed.scene, mask, new_class, label_nc=ed.label_nc, feature=feature, cluster=cluster)


def _set_feature(ed: Editor, edit: Mapping[str, Any], mask_loader) -> Change:
    inst_id = ed.instance_of(edit)
    ed.require_features("set_feature")
    cluster, vector = edit.get("cluster"), edit.get("vector")
    if (cluster is None) == (vector is None):
        raise ValueError("set_feature needs exactly one of cluster= or vector=")
    cluster, vector = ed.feature_of(class_of(ed.scene, inst_id), cluster, vector)
    return set_feature(ed.scene, inst_id, vector, cluster), inst_id


def _set_colour(ed: Editor, edit: Mapping[str, Any], mask_loader) -> Change:
    inst_id, rgb = ed.instance_of(edit), _get(edit, "rgb")
    ed.require_features("set_colour")
    if not ed.synth.colour_features:  # the weight is validated >= 0, so not anchored means 0
        raise ValueError("this model's features are not anchored to colour (loss.lambda_feature_colour=0): "
                         "pick a cluster or a vector instead")
    return set_feature(ed.scene, inst_id, ed.colour_feature(inst_id, rgb)), inst_id


def _copy_feature(ed: Editor, edit: Mapping[str, Any], mask_loader) -> Change:
    src, dst = ed.instance_of(edit, "src"), ed.instance_of(edit, "dst")
    ed.require_features("copy_feature")
    return copy_feature(ed.scene, src, dst), dst


def _move(ed: Editor, edit: Mapping[str, Any], mask_loader) -> Change:
    dy, dx = _pair_of_ints(_get(edit, "by"), "by [dy, dx]")
    inst_id = ed.instance_of(edit)
    ed.require_object(inst_id, "move")
    return move_instance(ed.scene, inst_id, dy, dx), inst_id


def _delete(ed: Editor, edit: Mapping[str, Any], mask_loader) -> Change:
    inst_id = ed.instance_of(edit)
    ed.require_object(inst_id, "delete")
    return delete_instance(ed.scene, inst_id), None


def _resize(ed: Editor, edit: Mapping[str, Any], mask_loader) -> Change:
    inst_id = ed.instance_of(edit)
    scale = ops.as_float(_get(edit, "scale"), "scale")
    ed.require_object(inst_id, "resize")
    return resize_instance(ed.scene, inst_id, scale), inst_id


def _flip(ed: Editor, edit: Mapping[str, Any], mask_loader) -> Change:
    inst_id = ed.instance_of(edit)
    ed.require_object(inst_id, "flip")
    return flip_instance(ed.scene, inst_id), inst_id


_CHANGES: dict[str, Callable[[Editor, Mapping[str, Any], Optional[MaskLoader]], Change]] = {
    "relabel": _relabel, "paint": _paint, "add_object": _add_object, "set_feature": _set_feature,
    "set_colour": _set_colour, "copy_feature": _copy_feature, "move": _move, "delete": _delete,
    "resize": _resize, "flip": _flip,
}
assert set(_CHANGES) | set(HISTORY_OPS) | {"local"} == set(OPS)


# ----------------------------------------------------------------------------- parsing helpers


def _given(**values: Any) -> dict[str, Any]:
    """The keyword arguments that were given (not None), as edit keys."""
    return {k: v for k, v in values.items() if v is not None}


def _record(edit: Mapping[str, Any]) -> dict[str, Any]:
    """The edit as the log keeps it: JSON values (numpy converted), a mask array from Python as None."""
    plain = {k: (None if k == "mask" and isinstance(v, np.ndarray) else v) for k, v in edit.items()}
    return json.loads(json.dumps(plain, default=_jsonable))


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
    except (TypeError, ValueError, RecursionError):
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
