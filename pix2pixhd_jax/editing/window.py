"""Window renders: a local edit re-renders only a window around what it changed.

A local edit keeps the previous image beyond a few pixels of what changed (compositing), so only
that box needs the generator, plus some context around it. G is convolutional apart from its
instance norms, whose statistics span the whole image: a window rendered alone would be
normalised by its own content and come out in other tones. So a full render here also records
every norm layer's whole-image mean and mean of squares (layers.NORM_STATS), and a window render of
the same parameters normalises with those, shifted by what its own sums differ from the same window
of the current scene (layers.WINDOW_SUMS: the edit's share of the whole image).

Those sums of the current scene come from one of two places, so every window render is one pass:
  a window render   it records the sums of the scene it made: the next edit in the same window (a
                    drag, a switch back to that object while no edit touched its window since:
                    EditSession keeps a few) takes them as they are
  the blocks        a full render records every norm layer's input summed per divisor block
                    (`block_sums`), and each window render puts in its own for the window less its
                    context ring (`inner_box`), where its activations stand for the edited scene's:
                    the blocks follow the scene. Any other window takes its sums from them. Inside
                    the ring a window's own activations are off (the border is padded), so both
                    sides of the shift are then taken over the window less the ring; what the edit
                    changes in the ring itself is left out
Two things still differ from a full render of the edited scene:

  context  the window's border is reflect-padded where the full image has real neighbours; the
           window reaches `context_px` beyond the composited box, so the border's effect has
           decayed where pixels are used
  stats    the shift is first order: it sees how the window's activations changed, not how the
           rest of the image re-normalises (large for a large edit: a big object relabelled)

The bound, measured on the editor workflow's model, is checked by tests/test_editing_window.py and
reported in benchmarks/RESULTS.md.

  window_box      where to render: the composited box + context, aligned to G's divisor so the
                  strided layers sample the grid of the full render, two lengths per octave
                  (few compiled shapes); None when that is the whole image anyway
  window_boxes    one window per group of changed pixels when that is smaller (a move's old and
                  new place apart): a move's cost follows the object's size, not the distance
  inner_box       the window less its context ring (the sides away from the image's border)
  WindowRenderer  the jitted full render (image + statistics + block sums) and window render of one
                  Synthesizer; renderer_for(synth) shares one per Synthesizer (its compiled shapes with it)
"""
from __future__ import annotations

import weakref
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from pix2pixhd_jax.export import to_output
from pix2pixhd_jax.models import factory
from pix2pixhd_jax.models.layers import NORM_STATS, WINDOW_SUMS, Norm
from pix2pixhd_jax.semantics import check_labels

Box = tuple[slice, slice]


def supports_windows(model_cfg) -> tuple[bool, str]:
    """(whether G's output is local, why not): self-attention sees the whole image at once."""
    if model_cfg.g_attention:
        return False, "G has self-attention (model.g_attention): every pixel depends on the whole image"
    if model_cfg.get("noise_inputs", False):
        return False, ("G draws per-pixel noise (model.noise_inputs): a window's fixed draw is not the full "
                       "image's, so its texture would not match around it")
    return True, ""


def window_lengths(size: int, divisor: int) -> list[int]:
    """The window lengths along an axis of `size`: divisor * (1, 2, 3, 4, 6, 8, 12, ...) below size, then size.

    Two lengths per octave: a window is at most 1.5x what it needs, and a few shapes get compiled.
    """
    steps = sorted({2 ** i for i in range(31)} | {3 * 2 ** i for i in range(30)})
    return [divisor * k for k in steps if divisor * k < size] + [size]


def _axis_window(lo: int, hi: int, size: int, divisor: int) -> tuple[int, int]:
    """[start, end) covering [lo, hi) clipped to [0, size): start a multiple of `divisor`, a length of window_lengths."""
    lo, hi = max(0, lo), min(size, hi)
    for length in window_lengths(size, divisor):
        start = min(lo // divisor * divisor, size - length)
        if start + length >= hi:
            return start, start + length
    return 0, size


def window_box(changed: np.ndarray, reach: int, context_px: int, divisor: int) -> Optional[Box]:
    """The window to render for `changed` (H, W) bool: its box grown by reach + context_px, aligned.

    None when nothing changed, when the window would be the whole image, or when the image is not a
    multiple of the divisor (a full render then).
    """
    changed = np.asarray(changed, bool)
    h, w = changed.shape
    if not changed.any() or h % divisor or w % divisor:
        return None
    ys, xs = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    grow = reach + context_px
    rows = _axis_window(int(ys[0]) - grow, int(ys[-1]) + 1 + grow, h, divisor)
    cols = _axis_window(int(xs[0]) - grow, int(xs[-1]) + 1 + grow, w, divisor)
    if rows == (0, h) and cols == (0, w):
        return None
    return slice(*rows), slice(*cols)


def window_boxes(changed: np.ndarray, reach: int, context_px: int, divisor: int) -> Optional[list[Box]]:
    """The windows to render for `changed`: one per group of changed pixels when that covers less than one
    window around them all (a move's old and new place, the two ends of a wide object moved sideways),
    else [window_box]. None where window_box is None (a full render).

    Changed pixels whose grown boxes (reach + context_px) touch form a group; groups whose windows
    overlap are merged until none do.
    """
    changed = np.asarray(changed, bool)
    single = window_box(changed, reach, context_px, divisor)
    if single is None:
        return None
    (h, w), d = changed.shape, divisor
    cells = changed.reshape(h // d, d, w // d, d).any(axis=(1, 3))
    grow = -(-(reach + context_px) // d)
    groups, n = ndimage.label(ndimage.maximum_filter(cells, size=2 * grow + 1))
    if n == 1:
        return [single]
    masks = [changed & np.repeat(np.repeat(groups == k, d, axis=0), d, axis=1) for k in range(1, n + 1)]
    boxes = [window_box(m, reach, context_px, divisor) for m in masks]
    merged = True
    while merged and len(boxes) > 1:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if boxes[i] is None or boxes[j] is None or _overlap(boxes[i], boxes[j]):
                    masks[i] = masks[i] | masks.pop(j)
                    boxes.pop(j)
                    boxes[i] = window_box(masks[i], reach, context_px, divisor)
                    merged = True
                    break
            if merged:
                break
    if len(boxes) > 1 and sum(box_area(b) for b in boxes) < box_area(single):
        return boxes
    return [single]


def box_area(box: Box) -> int:
    return (box[0].stop - box[0].start) * (box[1].stop - box[1].start)


def _overlap(a: Box, b: Box) -> bool:
    return all(x.start < y.stop and y.start < x.stop for x, y in zip(a, b))


def inner_box(box: Box, shape: tuple[int, int], context_px: int, divisor: int) -> Box:
    """`box` less a ring of context_px (rounded up to the divisor) on each side that is not the image's border.

    The window's activations are off near a border the full image does not have (padding instead of
    neighbours); at the image's border both are padded alike.
    """
    ring = -(-context_px // divisor) * divisor
    out = []
    for s, size in zip(box, shape):
        start, stop = s.start + (ring if s.start > 0 else 0), s.stop - (ring if s.stop < size else 0)
        out.append(slice(start, max(start, stop)))
    return out[0], out[1]


def block_sums(x: jax.Array, grid: tuple[int, int]) -> dict[str, jax.Array]:
    """An NHWC tensor's (sum, sum of squares) per block of a rows x cols grid, each (B, rows, cols, C) float32."""
    b, h, w, c = x.shape
    rows, cols = grid
    if h % rows or w % cols:
        raise ValueError(f"a norm layer's input of {h}x{w} does not split into the {rows}x{cols} divisor grid; "
                         "set editing.window_context_px=0 for this generator")
    x = x.astype(jnp.float32).reshape(b, rows, h // rows, cols, w // cols, c)
    return {"sum": x.sum((2, 4)), "sum_sq": jnp.square(x).sum((2, 4))}


def _nest(tree: dict, path: tuple[str, ...], leaf: Any) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = leaf


def _placed(whole: jax.Array, part: jax.Array, place: jax.Array) -> jax.Array:
    """Block sums of the whole image with those of a window put in, inside its inner cells only.

    place: int32 [window's first row, first col, inner rows start, stop, inner cols start, stop] in cells.
    """
    b, (h, w), c = whole.shape[0], part.shape[1:3], whole.shape[3]
    here = jax.lax.dynamic_slice(whole, (0, place[0], place[1], 0), (b, h, w, c))
    rows, cols = jnp.arange(h) + place[0], jnp.arange(w) + place[1]
    inside = ((rows >= place[2]) & (rows < place[3]))[:, None] & ((cols >= place[4]) & (cols < place[5]))[None, :]
    merged = jnp.where(inside[None, :, :, None], part, here)
    return jax.lax.dynamic_update_slice(whole, merged, (0, place[0], place[1], 0))


def _sums_in(blocks: Any, cells: jax.Array, region: jax.Array) -> Any:
    """Block sums -> WINDOW_SUMS over the grid cells [r0, r1) x [c0, c1) given, with the window `region`."""
    if "sum" not in blocks:
        return {k: _sums_in(v, cells, region) for k, v in blocks.items()}
    rows, cols = jnp.arange(blocks["sum"].shape[1]), jnp.arange(blocks["sum"].shape[2])
    mask = (((rows >= cells[0]) & (rows < cells[1]))[:, None] & ((cols >= cells[2]) & (cols < cells[3]))[None, :])
    mask = mask.astype(jnp.float32)[None, :, :, None]
    return {"sum": (blocks["sum"] * mask).sum((1, 2)), "sum_sq": (blocks["sum_sq"] * mask).sum((1, 2)),
            "region": region}


def _generator_input(model_cfg, label: jax.Array, inst: jax.Array, feats: Optional[jax.Array]) -> jax.Array:
    """G's input as factory.generate builds it: label encoding, then the features."""
    g_in = factory.label_encoding({"label": label, "inst": inst}, model_cfg)
    return g_in if feats is None else jnp.concatenate([g_in, feats.astype(g_in.dtype)], axis=-1)


class WindowRenderer:
    """Full renders that keep G's instance-norm statistics, and window renders that use and update them."""

    def __init__(self, synthesizer):
        self._synth = weakref.ref(synthesizer)  # renderer_for keys on the Synthesizer: no cycle through here
        model_cfg, generator = synthesizer.config.model, synthesizer.nets.generator
        ok, why = supports_windows(model_cfg)
        if not ok:
            raise ValueError(f"window renders need a local generator: {why}; set editing.window_context_px=0")

        divisor = synthesizer.divisor

        def recording_blocks(blocks: dict, grid: tuple[int, int]):
            """An interceptor that sums every instance norm's input per divisor block into `blocks`
            (the model records its own whole-image statistics; the blocks are the editor's business)."""
            def record(next_fun, args, kwargs, context):
                module = context.module
                if isinstance(module, Norm) and module.kind == "instance" and context.method_name == "__call__":
                    _nest(blocks, module.path, block_sums(args[0], grid))
                return next_fun(*args, **kwargs)
            return nn.intercept_methods(record)

        def full(params: Any, collections: Any, label: jax.Array, inst: jax.Array, feats: Optional[jax.Array]):
            g_in = _generator_input(model_cfg, label, inst, feats)
            blocks: dict = {}
            with recording_blocks(blocks, (g_in.shape[1] // divisor, g_in.shape[2] // divisor)):
                fake, captured = generator.apply({"params": params, **collections}, g_in, False, mutable=[NORM_STATS])
            return to_output(fake, "uint8"), captured.get(NORM_STATS, {}), blocks

        def window_input(label: jax.Array, inst: jax.Array, feats: Optional[jax.Array]) -> jax.Array:
            # label and inst come 1 px wider on every side, so the boundary map at the window's
            # border sees the same neighbours as in the whole image; the input is cut back after.
            g_in = _generator_input(model_cfg, label, inst, None)[:, 1:-1, 1:-1]
            return g_in if feats is None else jnp.concatenate([g_in, feats.astype(g_in.dtype)], axis=-1)

        def window(params: Any, collections: Any, stats: Any, sums: Any, blocks: Any, place: jax.Array,
                   after: tuple):
            # Each layer normalises with the statistics shifted by what its sums in the edited window
            # differ from `sums` (the same window of the scene the statistics belong to). The blocks
            # inside the window less its ring take the window's own: the edited scene's from now on.
            variables = {"params": params, **collections, NORM_STATS: stats, WINDOW_SUMS: sums}
            g_in, ours = window_input(*after), {}
            with recording_blocks(ours, (g_in.shape[1] // divisor, g_in.shape[2] // divisor)):
                fake, updated = generator.apply(variables, g_in, False, mutable=[NORM_STATS])
            blocks = jax.tree_util.tree_map(lambda whole, part: _placed(whole, part, place), blocks, ours)
            return to_output(fake, "uint8"), updated.get(NORM_STATS, {}), blocks

        def from_blocks(params: Any, collections: Any, stats: Any, blocks: Any, place: jax.Array, region: jax.Array,
                        after: tuple):
            return window(params, collections, stats, _sums_in(blocks, place[2:], region), blocks, place, after)

        def two_passes(params: Any, collections: Any, stats: Any, blocks: Any, place: jax.Array, before: tuple,
                       after: tuple):
            # The current scene's sums in the window taken the same way as the edited window's (its
            # padded border and all): the shift then sees the edit's own change alone.
            variables = {"params": params, **collections, NORM_STATS: stats}
            _, sums = generator.apply(variables, window_input(*before), False, mutable=[WINDOW_SUMS])
            return window(params, collections, stats, sums.get(WINDOW_SUMS, {}), blocks, place, after)

        self._full, self._window, self._from_blocks = jax.jit(full), jax.jit(window), jax.jit(from_blocks)
        self._two_passes = jax.jit(two_passes)

    @property
    def synth(self):
        return self._synth()

    @property
    def _variables(self) -> tuple[Any, Any]:
        return self.synth.g_params["generator"], self.synth.g_collections["generator"]

    def full(self, label: np.ndarray, inst: np.ndarray, feats: Optional[np.ndarray]) -> tuple[np.ndarray, Any, Any]:
        """(H, W) maps (+ (H, W, F) features) -> ((H, W, 3) uint8 image, the norm statistics of this render,
        every norm layer's input summed per divisor block)."""
        check_labels(label, self.synth.config.model.label_nc, "the scene's label map")
        (h, w), divisor = np.shape(label), self.synth.divisor
        if h % divisor or w % divisor:  # as synthesize says it
            raise ValueError(f"label map size {h}x{w} (HxW): the generator needs multiples of {divisor}; resize to "
                             f"{h + -h % divisor}x{w + -w % divisor}")
        image, stats, blocks = self._full(*self._variables, jnp.asarray(label, jnp.int32)[None],
                                          jnp.asarray(inst, jnp.int32)[None],
                                          None if feats is None else jnp.asarray(feats, jnp.float32)[None])
        return np.asarray(image)[0], stats, blocks

    def window(self, stats: Any, blocks: Any, after: Maps, box: Box, inner: Box, sums: Any = None,
               before: Optional[Maps] = None) -> tuple[np.ndarray, Any, Any, Any]:
        """(the image inside `box` of the scene `after`, the statistics shifted to it, its sums in the window,
        the blocks with those of the window less its ring replaced by the edited scene's).

        stats, blocks: those of the current scene (a full render's, updated by the window renders
        since); after: (label, inst, feats) with (H, W) maps and (h, w, F) features inside `box` (or
        None); inner: inner_box of the window. The current scene's sums in the window are `sums` when
        given (what the window render that made the scene recorded there: the whole window, exactly
        as this pass sums it), else a first pass over `before` (the current scene's maps) when given,
        else the blocks' over `inner`.
        """
        check_labels(after[0], self.synth.config.model.label_nc, "the scene's label map")
        d, (rows, cols) = self.synth.divisor, inner
        place = jnp.asarray([box[0].start // d, box[1].start // d, rows.start // d, rows.stop // d, cols.start // d,
                             cols.stop // d], jnp.int32)
        maps = _window_maps(after, box)
        if sums is None and before is not None:
            image, shifted, blocks = self._two_passes(*self._variables, stats, blocks, place, _window_maps(before, box),
                                                      maps)
        elif sums is None:
            region = jnp.asarray([rows.start - box[0].start, rows.stop - box[0].start, cols.start - box[1].start,
                                  cols.stop - box[1].start, box[0].stop - box[0].start, box[1].stop - box[1].start],
                                 jnp.int32)
            image, shifted, blocks = self._from_blocks(*self._variables, stats, blocks, place, region, maps)
        else:
            image, shifted, blocks = self._window(*self._variables, stats, sums, blocks, place, maps)
        stats, sums = _split_sums(shifted)
        return np.asarray(image)[0], stats, sums, blocks


def _split_sums(recorded: Any) -> tuple[Any, Any]:
    """A window render's NORM_STATS -> (the statistics alone, the WINDOW_SUMS it recorded), same nesting."""
    if "mean" in recorded:
        stats = {k: recorded[k] for k in ("mean", "mean_sq", "count")}
        return stats, {"sum": recorded["window_sum"], "sum_sq": recorded["window_sum_sq"]}
    pairs = {k: _split_sums(v) for k, v in recorded.items()}
    return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}


Maps = tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]
_RENDERERS: "weakref.WeakKeyDictionary[Any, WindowRenderer]" = weakref.WeakKeyDictionary()


def renderer_for(synthesizer) -> WindowRenderer:
    """The WindowRenderer of `synthesizer`, made once: every session of it shares the compiled functions."""
    renderer = _RENDERERS.get(synthesizer)
    if renderer is None:
        renderer = _RENDERERS[synthesizer] = WindowRenderer(synthesizer)
    return renderer


def _window_maps(maps: Maps, box: Box) -> tuple[jax.Array, jax.Array, Optional[jax.Array]]:
    """(label, inst) cut to `box` plus 1 px on every side, and the features, batched for the generator."""
    label, inst, feats = np.asarray(maps[0]), np.asarray(maps[1]), maps[2]
    (rows, cols), (h, w) = box, label.shape
    wide = (slice(max(0, rows.start - 1), rows.stop + 1), slice(max(0, cols.start - 1), cols.stop + 1))
    # At the image's border, edge replication adds a neighbour equal to the pixel: no boundary
    # there, as in the whole image's map.
    widths = ((int(rows.start == 0), int(rows.stop == h)), (int(cols.start == 0), int(cols.stop == w)))
    return (jnp.asarray(np.pad(label[wide], widths, mode="edge"), jnp.int32)[None],
            jnp.asarray(np.pad(inst[wide], widths, mode="edge"), jnp.int32)[None],
            None if feats is None else jnp.asarray(feats, jnp.float32)[None])
