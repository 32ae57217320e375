"""The editing session over a Synthesizer: the current scene and image, history, render, composite.

`EditSession` holds what one user is editing. `commit(scene, region, record)` renders a new
scene (its regions without a feature draw one from the bank with the same (seed, id) rule as
synthesize), composites it locally when `local` is on, pushes the previous state onto the
history and logs `record` (the edit as JSON, for script export); `undo` / `redo` / `reset`
restore stored states without rendering. Every call returns an `EditResult` that carries the
render time it measured (0 when the image came from the history).

With `local=True` the new render is composited into the current image around what the edit
changed (`compositing`), so pixels away from the edit keep their exact values; off by default
(each edit shows the raw generator output). A local edit renders only a window around what it
changed (`window`: the composited box plus `window_context_px` of context, normalised with the
instance-norm statistics of the last full render shifted by the edits since), so its cost follows
the edit's size: one pass over the window where the current scene's sums there are known (the
window render that recorded them) or a move's (from the per-block sums the full render and the
window renders since kept), two for other edits (a first pass over the current scene); every other
render (the first, edits with local off, a window that would cost
more than the whole image) is a full one. The edit vocabulary on top (typed edits, JSON
dispatch, script export) is `vocabulary.Editor`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import OrderedDict
from typing import Any, Optional, Sequence

import numpy as np

from pix2pixhd_jax.editing import compositing, ops, window as window_lib
from pix2pixhd_jax.editing import options as options_lib
from pix2pixhd_jax.editing.options import EditorOptions
from pix2pixhd_jax.editing.scene import Scene, check_rgb, check_vector, corrected_colour_feature, feature_colour
from pix2pixhd_jax.features import feature_map

# Edits whose window takes the current scene's sums from the blocks (one pass) rather than from a
# pass over it: a move shifts the statistics little. A look, class or presence changed by a large
# object moves them more than the blocks' shift sees (at 1024x512, the README model's largest car:
# cluster 0.57 / 4, delete 4.98 / 43 levels from the blocks against 0.47 / 3 and 3.61 / 31 with the
# pass; benchmarks/RESULTS.md).
BLOCK_SUMS_OPS = ("move",)

# Windows whose sums of the current scene are kept (the last edits' windows whose maps no later edit
# touched): switching back to an object edited before needs one pass over its window again.
KNOWN_WINDOWS = 8

# History images whose statistics and block sums are kept for undo / redo (the current one
# included). The blocks of a 2048x1024 scene take ~0.6 GB, so keeping them for every history entry
# ran a long session out of memory; an edit after undoing further back renders in full once.
KEPT_NORM_STATES = 4

# Swatch windows: power-of-two sides of at least this many pixels (and G's divisor) keep the
# number of shapes the generator compiles for swatches small.
SWATCH_MIN_SIDE = 32
ASKED_COLOURS_KEPT = 1024  # set_colour features whose asked colour colour_shown remembers


@dataclasses.dataclass(frozen=True)
class EditResult:
    scene: Scene
    image: np.ndarray  # (H, W, 3) uint8
    region: Optional[int] = None  # the region the edit created or touched
    render_seconds: float = 0.0  # the generator call this result needed (0: the image came from the history)


@dataclasses.dataclass(frozen=True)
class Render:
    image: np.ndarray  # (H, W, 3) uint8
    seconds: float  # wall time of the generator call, until the image was on the host
    norm_stats: Any = None  # G's instance-norm statistics of the scene rendered (window renders: shifted to it)
    window: Any = None  # a window render's (windows, the scene's sums in each): the next edit there needs one pass
    blocks: Any = None  # a full render's norm inputs summed per divisor block (window.WindowRenderer.full)


@dataclasses.dataclass(frozen=True)
class SwatchPlan:
    """The swatches of one instance in one scene state, before rendering (EditSession.swatch_plan)."""

    instance: int
    class_id: int
    current: Optional[int]  # the instance's cluster now (None: a vector, not a bank centre)
    num_clusters: int
    window: Scene  # the maps cut to the render window, with the scene's features
    bbox: list[int]  # the instance's box inside the window [y0, x0, y1, x1]
    key: tuple  # equal keys render equal swatches (instance, window, content digest)


@dataclasses.dataclass(frozen=True)
class Swatches:
    """An instance rendered with each cluster of its class: crops around it, in cluster order."""

    instance: int
    class_id: int
    current: Optional[int]  # the instance's cluster now (None: a vector, not a bank centre)
    crops: list[np.ndarray]


class EditSession:
    """One scene being edited: current scene and image, history for undo / redo / reset, the edit log.

    History entries keep the image rendered for each scene, so undo and redo need no forward pass.
    `max_history` bounds the undo depth (oldest steps dropped; None = unbounded).

    `local` (default False: every edit shows the raw generator output) composites each new render
    into the current image: pixels within `local_margin_px` of what the edit changed take the new
    render, the next `local_feather_px` blend, the rest keep their bytes. The widths come from the
    config's `editing` section unless given here. `local` can be switched at any time; it applies
    to the edits that follow.

    `window_context_px` (config editing.window_context_px unless given; 0 or absent: off) makes
    local edits render a window (window.py) instead of the whole image; switching `local` off
    gives full renders again.

    `colour_corrections` (config editing.colour_corrections unless given): how many renders of the
    object alone a set_colour makes to correct its feature toward the asked colour (colour_feature).
    """

    def __init__(self, synthesizer, label: np.ndarray, inst: Optional[np.ndarray] = None, *, seed: Optional[int] = None,
                 thing_classes: Optional[Sequence[int]] = None, max_history: Optional[int] = None,
                 local: bool = False, local_margin_px: Optional[int] = None, local_feather_px: Optional[int] = None,
                 window_context_px: Optional[int] = None, colour_corrections: Optional[int] = None):
        self.synth = synthesizer
        options = EditorOptions.from_config(synthesizer.config)
        if colour_corrections is not None:
            options = dataclasses.replace(options, colour_corrections=options_lib.count(
                colour_corrections, 0, "colour_corrections"))
        self.editor_options = options
        self._asked_colours: "OrderedDict[bytes, list[int]]" = OrderedDict()  # set_colour's features -> colour asked
        if synthesizer.options.label_feat:
            raise ValueError("the editor works per instance (model.instance_feat); this model pools per label region")
        self.local_margin_px = _px(local_margin_px, options.local_margin_px, "local_margin_px")
        self.local_feather_px = _px(local_feather_px, options.local_feather_px, "local_feather_px")
        self._local = False
        self.local = local
        self.window_context_px = _px(window_context_px, options.window_context_px, "window_context_px")
        self._windows = (window_lib.renderer_for(synthesizer)
                         if self.window_context_px and window_lib.supports_windows(synthesizer.config.model)[0] else None)
        self._norm_stats = None  # G's instance-norm statistics of the current scene (window renders use them)
        self._blocks = None  # the current scene's norm inputs summed per divisor block (window.py)
        self._known: list[tuple[window_lib.Box, Any]] = []  # (window, the current scene's sums there), newest first
        # id(an image in the history) -> (statistics, blocks, known) of its scene, oldest kept first
        self._stats_of: dict[int, Any] = {}
        self._last_window: tuple = (None, (), ())  # (scene made, windows, its sums in each) of the last window render
        self.label_nc = synthesizer.options.label_nc
        self.thing_classes = tuple(thing_classes if thing_classes is not None else options.thing_classes)
        self.seed = synthesizer.options.sample_seed if seed is None else seed
        self.max_history = max_history
        label = np.asarray(label, np.int32)
        inst = label.copy() if inst is None else np.asarray(inst, np.int32)
        if label.ndim != 2 or inst.shape != label.shape:
            raise ValueError(f"label {label.shape} and instance {inst.shape} maps must be (H, W) of one size")
        self._initial = self.fill_features(Scene(label, inst))
        self.scene = self._initial
        self.history: list[tuple[Scene, np.ndarray]] = []
        self.future: list[tuple[Scene, np.ndarray]] = []
        self.log: list[dict[str, Any]] = []  # every edit as JSON, for script export
        self.log_local: list[bool] = []  # the local setting each logged edit ran with
        first = self.render_full(self.scene)
        self.image = self._initial_image = first.image
        self._keep_norms(first)
        self.initial_render_seconds = first.seconds  # what opening the scene cost

    @property
    def local(self) -> bool:
        return self._local

    @local.setter
    def local(self, on: Any) -> None:
        if not isinstance(on, (bool, np.bool_)):
            raise ValueError(f"local must be true or false, got {on!r}")
        if on and (self.local_margin_px is None or self.local_feather_px is None):
            raise ValueError("local edits need editing.local_margin_px and editing.local_feather_px: this config "
                             "predates the editing section; load it with Synthesizer.from_workdir(..., defaults="
                             "pix2pixhd_jax.configs.default.get_config()) or pass local_margin_px= / local_feather_px=")
        self._local = bool(on)

    # ------------------------------------------------------------------------------ features
    def fill_features(self, scene: Scene) -> Scene:
        """Regions without a feature draw one from the bank with the same (seed, id) rule as synthesize()."""
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

    def require_features(self, what: str) -> None:
        if not self.synth.uses_features:
            raise ValueError(f"{what} needs a model trained with instance features (model.instance_feat); "
                             "this one takes no appearance features")

    def feature_of(self, class_id: int, cluster: Any, vector: Any) -> tuple[Optional[int], np.ndarray]:
        """(cluster, vector) for exactly one of cluster= (a centre of the class in the bank) / vector=."""
        if vector is not None:
            return None, check_vector(vector, self.synth.options.feat_num)
        cluster = ops.as_int(cluster, "cluster")
        return cluster, self.synth.require_bank().center(class_id, cluster)

    # ------------------------------------------------------------------------------ render
    def render(self, scene: Scene) -> Render:
        """The image of `scene` (its own features) and the wall time the generator took."""
        start = time.perf_counter()
        feats = feature_map(scene.inst, scene.features)[None] if self.synth.uses_features else None
        image = np.asarray(self.synth.synthesize(scene.label[None], scene.inst[None], feats))[0]
        return Render(image, time.perf_counter() - start)

    def render_full(self, scene: Scene) -> Render:
        """The image of the whole `scene`; with window renders on, it also keeps G's norm statistics."""
        if self._windows is None:
            return self.render(scene)
        start = time.perf_counter()
        feats = feature_map(scene.inst, scene.features) if self.synth.uses_features else None
        image, stats, blocks = self._windows.full(scene.label, scene.inst, feats)
        return Render(image, time.perf_counter() - start, stats, blocks=blocks)

    def render_window(self, scene: Scene, boxes: Sequence[window_lib.Box], from_blocks: bool = True) -> Render:
        """The current image with `boxes` re-rendered from `scene`, and the statistics shifted to `scene`.

        Several windows render one after the other, each with the statistics the one before shifted.
        A window without known sums takes them from the blocks (`from_blocks`) or a pass over it.
        """
        start = time.perf_counter()
        image, stats, blocks, recorded = self.image.copy(), self._norm_stats, self._blocks, []
        for box in boxes:
            # A window render recorded the sums of the scene it made in its window: the same window of
            # that scene (a drag, a switch back to an object) takes them; any other, the blocks'.
            inner = window_lib.inner_box(box, scene.label.shape, self.window_context_px, self.synth.divisor)
            sums = self._known_sums(box)
            before = self._window_maps(self.scene, box) if sums is None and not from_blocks else None
            image[box], stats, sums, blocks = self._windows.window(stats, blocks, self._window_maps(scene, box), box,
                                                                   inner, sums, before)
            recorded.append(sums)
        return Render(image, time.perf_counter() - start, stats, (tuple(boxes), tuple(recorded)), blocks)

    def _known_sums(self, box: window_lib.Box) -> Any:
        """The current scene's sums in `box` if a window render recorded them (and no edit since touched its maps)."""
        for known, sums in self._known:
            if known == box:
                return sums
        return None

    def _window_maps(self, scene: Scene, box: window_lib.Box) -> window_lib.Maps:
        """(label, inst, the features inside `box`) of `scene`, as WindowRenderer.window takes them."""
        feats = feature_map(scene.inst[box], scene.features) if self.synth.uses_features else None
        return scene.label, scene.inst, feats

    def _keep_norms(self, render: Render, changed: Optional[np.ndarray] = None) -> None:
        """Take the statistics and block sums of a render of the new current image (and the windows' sums)."""
        self._norm_stats, self._blocks = render.norm_stats, render.blocks
        if render.window is None:
            self._known = []
        else:
            touched = _touched_blocks(changed, self.synth.divisor)
            # Sums recorded earlier stay those of the current scene where this edit left the maps alone
            # (to first order: the statistics they were taken with have shifted a little since).
            d, boxes = self.synth.divisor, render.window[0]
            kept = [(box, sums) for box, sums in self._known if box not in boxes
                    and not touched[box[0].start // d:box[0].stop // d, box[1].start // d:box[1].stop // d].any()]
            self._known = (list(zip(*render.window)) + kept)[:KNOWN_WINDOWS]
        self._stats_of.pop(id(self.image), None)  # re-inserted as the newest
        self._stats_of[id(self.image)] = (self._norm_stats, self._blocks, self._known)
        while len(self._stats_of) > KEPT_NORM_STATES:
            del self._stats_of[next(iter(self._stats_of))]  # returning to that image: the next edit renders in full

    def _restore_norms(self) -> None:
        """The statistics (blocks, known sums) kept for the current image (undo, redo, reset)."""
        self._norm_stats, self._blocks, self._known = self._stats_of.get(id(self.image), (None, None, []))

    def warm_up_windows(self) -> list[tuple[int, int]]:
        """Compile the window renders of moves (sums from the blocks) and of the edits after them (known
        sums) for the window shapes the current scene's objects take when edited in place; returns those (rows, cols) shapes. Renders
        nothing it keeps."""
        if self._windows is None or self._norm_stats is None:
            return []
        boxes = {}
        for inst_id in self.scene.instances():
            box = self.window_of(self.scene.inst == inst_id)
            if box is not None:
                boxes.setdefault((box[0].stop - box[0].start, box[1].stop - box[1].start), box)
        scene = self.scene
        for box in boxes.values():
            maps = self._window_maps(scene, box)
            inner = window_lib.inner_box(box, scene.label.shape, self.window_context_px, self.synth.divisor)
            # A first move's pass (sums from the blocks), then the next edits' (known sums). The first
            # look, class or delete of an object (two passes) compiles when it comes.
            _, _, sums, _ = self._windows.window(self._norm_stats, self._blocks, maps, box, inner)
            self._windows.window(self._norm_stats, self._blocks, maps, box, inner, sums)
        return sorted(boxes)

    def changed(self, scene: Scene) -> np.ndarray:
        """(H, W) bool: where `scene`'s generator input differs from the current scene's.

        The features are compared per region, not per pixel: where the instance id is the same in
        both scenes the feature differs exactly where that region's vector does, and where the id
        differs the pixel has changed anyway (compositing.changed_region with both feature maps,
        without building them).
        """
        changed = compositing.changed_region(self.scene.label, self.scene.inst, scene.label, scene.inst)
        if self.synth.uses_features:
            old = self.scene.features
            recoloured = [rid for rid, vector in scene.features.items()
                          if rid not in old or not np.array_equal(old[rid], vector)]
            if recoloured:
                changed |= np.isin(scene.inst, recoloured)
        return changed

    def composite(self, scene: Scene, image: np.ndarray, changed: Optional[np.ndarray] = None) -> np.ndarray:
        """`image` (the render of `scene`) blended into the current image around what changed."""
        changed = self.changed(scene) if changed is None else changed
        return compositing.composite(self.image, image, changed, self.local_margin_px, self.local_feather_px)

    def window_of(self, changed: np.ndarray, from_blocks: bool = True) -> Optional[window_lib.Box]:
        """The one window around everything `changed` that a local edit would render, or None for a full render."""
        boxes = self.windows_of(changed, split=False, from_blocks=from_blocks)
        return None if boxes is None else boxes[0]

    def windows_of(self, changed: np.ndarray, split: bool = True,
                   from_blocks: bool = True) -> Optional[list[window_lib.Box]]:
        """The windows a local edit that changed `changed` renders (one per group of changes far
        apart when `split` and that is smaller: window.window_boxes), or None for a full render."""
        if self._windows is None or self._norm_stats is None:
            return None
        reach = self.local_margin_px + self.local_feather_px + 1  # every pixel composite() may blend
        args = (changed, reach, self.window_context_px, self.synth.divisor)
        if split:
            boxes = window_lib.window_boxes(*args)
        else:
            box = window_lib.window_box(*args)
            boxes = None if box is None else [box]
        if boxes is None:
            return None
        made, last_boxes, _ = self._last_window
        if made is self.scene and len(boxes) == 1:
            for last_box in last_boxes:
                if _contains(last_box, boxes[0]) and _area(last_box) <= 2 * _area(boxes[0]):
                    # The last window holds this one (a look picked after a drag): one pass over it, with
                    # more context, costs less than two over the smaller window.
                    return [last_box]
        # A full render is cheaper once the windows' passes cover more than the image.
        cost = sum((1 if from_blocks or self._known_sums(b) is not None else 2) * _area(b) for b in boxes)
        return boxes if cost <= changed.size else None

    def swatches(self, inst_id: int) -> Swatches:
        """Instance `inst_id` rendered with each cluster of its class, in a window around it (not the
        whole map: an object's look is decided locally), cropped around the object."""
        plan = self.swatch_plan(inst_id)
        crops = [self.render_swatch(plan, k) for k in range(plan.num_clusters)]
        return Swatches(plan.instance, plan.class_id, plan.current, crops)

    def swatch_plan(self, inst_id: int) -> "SwatchPlan":
        """What the swatches of `inst_id` in the current scene render: its window, class and a content key."""
        self.require_features("swatches")
        scene = self.scene
        window, bbox, (wy0, wy1, wx0, wx1) = self._object_window(inst_id)
        class_id = int(window.label[window.inst == int(inst_id)][0])
        bank = self.synth.require_bank()
        label, inst = window.label, window.inst
        # The swatches depend on the window's maps and the features of the other regions in it only:
        # an edit elsewhere keeps them.
        digest = hashlib.sha1(np.ascontiguousarray(label).tobytes() + np.ascontiguousarray(inst).tobytes())
        for rid in ops.region_ids(inst).tolist():
            if rid != int(inst_id) and rid in scene.features:
                digest.update(np.asarray(scene.features[rid], np.float32).tobytes())
        key = (int(inst_id), (wy0, wy1, wx0, wx1), digest.hexdigest())
        return SwatchPlan(int(inst_id), class_id, scene.clusters.get(int(inst_id)), bank.num_clusters(class_id),
                          window, bbox, key)

    def _object_window(self, inst_id: int) -> tuple[Scene, list[int], tuple[int, int, int, int]]:
        """The current scene cut to a swatch-sized window around `inst_id`, its box in the window
        [y0, x0, y1, x1] and the window's place (y0, y1, x0, x1)."""
        scene = self.scene
        mask = scene.inst == int(inst_id)
        if not mask.any():
            raise ValueError(f"instance {inst_id} is not in the scene")
        ys, xs = np.nonzero(mask)
        (h, w), divisor = scene.label.shape, self.synth.divisor
        wy0, wy1 = _swatch_window(int(ys.min()), int(ys.max()) + 1, h, divisor)
        wx0, wx1 = _swatch_window(int(xs.min()), int(xs.max()) + 1, w, divisor)
        window = scene.replace(label=scene.label[wy0:wy1, wx0:wx1], inst=scene.inst[wy0:wy1, wx0:wx1])
        bbox = [int(ys.min()) - wy0, int(xs.min()) - wx0, int(ys.max()) + 1 - wy0, int(xs.max()) + 1 - wx0]
        return window, bbox, (wy0, wy1, wx0, wx1)

    def rendered_colour(self, inst_id: int, vector: np.ndarray) -> np.ndarray:
        """The mean colour (0..255, float) `inst_id` renders in with feature `vector`: its swatch window alone."""
        window, _, _ = self._object_window(inst_id)
        image = self.render(window.replace(features={**window.features, int(inst_id): vector})).image
        return image[window.inst == int(inst_id)].astype(np.float64).mean(axis=0)

    def colour_feature(self, inst_id: int, rgb: Any) -> np.ndarray:
        """The feature that renders `inst_id` in `rgb` (colour-anchored models): corrected_colour_feature with
        editing.colour_corrections renders of the object alone; remembered, so colour_shown gives rgb back."""
        options = self.editor_options
        vector = corrected_colour_feature(rgb, self.scene.features[int(inst_id)],
                                          lambda v: self.rendered_colour(inst_id, v),
                                          corrections=options.colour_corrections, bound=options.colour_feature_bound)
        self._asked_colours[vector.tobytes()] = [int(round(c)) for c in check_rgb(rgb)]
        while len(self._asked_colours) > ASKED_COLOURS_KEPT:
            self._asked_colours.popitem(last=False)
        return vector

    def colour_shown(self, vector: np.ndarray) -> list[int]:
        """The colour a feature stands for: the one asked for when set_colour made it (the correction moves
        the feature off it), else feature_colour(vector)."""
        asked = self._asked_colours.get(np.asarray(vector, np.float32).tobytes())
        return list(asked) if asked is not None else feature_colour(vector)

    def render_swatch(self, plan: "SwatchPlan", cluster: int) -> np.ndarray:
        """The swatch of one cluster: the plan's window rendered with that bank centre, cropped."""
        centre = self.synth.require_bank().center(plan.class_id, cluster)
        render = self.render(plan.window.replace(features={**plan.window.features, plan.instance: centre}))
        return np.ascontiguousarray(_crop_around(render.image, plan.bbox))

    # ------------------------------------------------------------------------------ history
    def commit(self, scene: Scene, region: Optional[int], record: dict[str, Any]) -> EditResult:
        """Make `scene` current: render (and composite when local), push history, log `record`."""
        scene = self.fill_features(scene)
        if self.local:
            changed, from_blocks = self.changed(scene), record.get("op") in BLOCK_SUMS_OPS
            boxes = self.windows_of(changed, from_blocks=from_blocks)
            render = self.render_full(scene) if boxes is None else self.render_window(scene, boxes, from_blocks)
            image = self.composite(scene, render.image, changed)
        else:
            render = self.render_full(scene)
            image = render.image
        self._push(self.history, (self.scene, self.image))
        self._forget(self.future)
        self.future.clear()
        self.scene, self.image = scene, image
        self._keep_norms(render, changed if self.local else None)
        self._last_window = (None, (), ()) if render.window is None else (scene, *render.window)
        self.note(record)
        return EditResult(self.scene, self.image, region, render.seconds)

    def note(self, record: dict[str, Any]) -> None:
        """Log an applied edit (or a setting) with the local setting it ran with."""
        self.log.append(record)
        self.log_local.append(self.local)

    def undo(self) -> EditResult:
        return self._travel(self.history, self.future, "undo")

    def redo(self) -> EditResult:
        return self._travel(self.future, self.history, "redo")

    def reset(self) -> EditResult:
        self._push(self.history, (self.scene, self.image))
        self._forget(self.future)
        self.future.clear()
        self.scene, self.image = self._initial, self._initial_image
        self._restore_norms()
        self.note({"op": "reset"})
        return EditResult(self.scene, self.image)

    def _travel(self, source: list, target: list, op: str) -> EditResult:
        """Undo (history -> future) or redo (future -> history): the stored maps and image, no render."""
        if not source:
            raise IndexError(f"nothing to {op}")
        self._push(target, (self.scene, self.image))
        self.scene, self.image = source.pop()
        self._restore_norms()
        self.note({"op": op})
        return EditResult(self.scene, self.image)

    def _push(self, stack: list, entry: tuple[Scene, np.ndarray]) -> None:
        stack.append(entry)
        if self.max_history is not None and len(stack) > self.max_history:
            self._forget(stack[:1])
            del stack[0]

    def _forget(self, entries: list) -> None:
        """Forget the statistics kept for the images of history entries about to be dropped (the opened scene's stay)."""
        for _, image in entries:
            if image is not self._initial_image:
                self._stats_of.pop(id(image), None)


def _touched_blocks(changed: np.ndarray, divisor: int) -> np.ndarray:
    """(H/d, W/d) bool: the divisor blocks holding a changed pixel, and their neighbours (a window's input
    reads one pixel beyond it for the boundary map): windows there have other maps now."""
    h, w = changed.shape
    cells = np.asarray(changed, bool).reshape(h // divisor, divisor, w // divisor, divisor).any(axis=(1, 3))
    grown = np.pad(cells, 1)
    out = np.zeros_like(cells)
    for dy in range(3):
        for dx in range(3):
            out |= grown[dy:dy + cells.shape[0], dx:dx + cells.shape[1]]
    return out


def _area(box: window_lib.Box) -> int:
    return (box[0].stop - box[0].start) * (box[1].stop - box[1].start)


def _contains(outer: window_lib.Box, inner: window_lib.Box) -> bool:
    """Whether box `outer` covers box `inner`."""
    return all(o.start <= i.start and i.stop <= o.stop for o, i in zip(outer, inner))


def _px(given: Optional[int], configured: Any, key: str) -> Optional[int]:
    """A compositing width: the keyword if given, else the config's editing.<key> (None when absent)."""
    if given is not None:
        return compositing.check_px(given, key)
    return None if configured is None else compositing.check_px(configured, f"editing.{key}")


def _swatch_window(lo: int, hi: int, size: int, divisor: int) -> tuple[int, int]:
    """[start, end) of a swatch render window around [lo, hi) along an axis of `size` pixels.

    Power-of-two lengths (a multiple of G's divisor) keep the number of shapes the generator
    compiles for swatches small; the map's own length caps it.
    """
    length = max(SWATCH_MIN_SIDE, divisor)
    while length < (hi - lo) * 1.5 + 8 and length < size:
        length *= 2
    length = min(length, size)
    start = min(max(0, (lo + hi - length) // 2), size - length)
    return start, start + length


def _crop_around(image: np.ndarray, bbox: list[int], margin: float = 0.25) -> np.ndarray:
    """The part of `image` inside bbox grown by `margin` of its size on every side (at least 2 px)."""
    y0, x0, y1, x1 = bbox
    my, mx = max(2, int((y1 - y0) * margin)), max(2, int((x1 - x0) * margin))
    h, w = image.shape[:2]
    return image[max(0, y0 - my):min(h, y1 + my), max(0, x0 - mx):min(w, x1 + mx)]
