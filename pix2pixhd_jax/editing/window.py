"""Window renders: a local edit re-renders only a window around what it changed.

A local edit keeps the previous image beyond a few pixels of what changed (compositing), so only
that box needs the generator, plus some context around it. G is convolutional apart from its
instance norms, whose statistics span the whole image: a window rendered alone would be
normalised by its own content and come out in other tones. So a full render here also records
every norm layer's whole-image mean and mean of squares (layers.NORM_STATS), and a window render of
the same parameters normalises with those, shifted by what its own sums differ from the same window
of the current scene (layers.WINDOW_SUMS: the edit's share of the whole image). Two things still
differ from a full render of the edited scene:

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
  WindowRenderer  the jitted full render (image + statistics) and window render of one Synthesizer;
                  renderer_for(synth) shares one per Synthesizer (its compiled shapes with it)
"""
from __future__ import annotations

import weakref
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from pix2pixhd_jax.export import to_output
from pix2pixhd_jax.models import factory
from pix2pixhd_jax.models.layers import NORM_STATS, WINDOW_SUMS
from pix2pixhd_jax.semantics import check_labels

Box = tuple[slice, slice]


def supports_windows(model_cfg) -> tuple[bool, str]:
    """(whether G's output is local, why not): self-attention sees the whole image at once."""
    if model_cfg.g_attention:
        return False, "G has self-attention (model.g_attention): every pixel depends on the whole image"
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

        def full(params: Any, collections: Any, label: jax.Array, inst: jax.Array, feats: Optional[jax.Array]):
            g_in = _generator_input(model_cfg, label, inst, feats)
            fake, captured = generator.apply({"params": params, **collections}, g_in, False, mutable=[NORM_STATS])
            return to_output(fake, "uint8"), captured.get(NORM_STATS, {})

        def window_input(label: jax.Array, inst: jax.Array, feats: Optional[jax.Array]) -> jax.Array:
            # label and inst come 1 px wider on every side, so the boundary map at the window's
            # border sees the same neighbours as in the whole image; the input is cut back after.
            g_in = _generator_input(model_cfg, label, inst, None)[:, 1:-1, 1:-1]
            return g_in if feats is None else jnp.concatenate([g_in, feats.astype(g_in.dtype)], axis=-1)

        def window(params: Any, collections: Any, stats: Any, sums: Any, after: tuple):
            # Each layer normalises with the statistics shifted by what its sums in the edited window
            # differ from `sums` (the same window of the scene the statistics belong to).
            variables = {"params": params, **collections, NORM_STATS: stats, WINDOW_SUMS: sums}
            fake, updated = generator.apply(variables, window_input(*after), False, mutable=[NORM_STATS])
            return to_output(fake, "uint8"), updated.get(NORM_STATS, {})

        def sums_of(params: Any, collections: Any, stats: Any, before: tuple):
            variables = {"params": params, **collections, NORM_STATS: stats}
            _, sums = generator.apply(variables, window_input(*before), False, mutable=[WINDOW_SUMS])
            return sums.get(WINDOW_SUMS, {})

        def two_passes(params: Any, collections: Any, stats: Any, before: tuple, after: tuple):
            return window(params, collections, stats, sums_of(params, collections, stats, before), after)

        self._full, self._window, self._two_passes = jax.jit(full), jax.jit(window), jax.jit(two_passes)

    @property
    def synth(self):
        return self._synth()

    @property
    def _variables(self) -> tuple[Any, Any]:
        return self.synth.g_params["generator"], self.synth.g_collections["generator"]

    def full(self, label: np.ndarray, inst: np.ndarray, feats: Optional[np.ndarray]) -> tuple[np.ndarray, Any]:
        """(H, W) maps (+ (H, W, F) features) -> ((H, W, 3) uint8 image, the norm statistics of this render)."""
        check_labels(label, self.synth.config.model.label_nc, "the scene's label map")
        (h, w), divisor = np.shape(label), self.synth.divisor
        if h % divisor or w % divisor:  # as synthesize says it
            raise ValueError(f"label map size {h}x{w} (HxW): the generator needs multiples of {divisor}; resize to "
                             f"{h + -h % divisor}x{w + -w % divisor}")
        image, stats = self._full(*self._variables, jnp.asarray(label, jnp.int32)[None],
                                  jnp.asarray(inst, jnp.int32)[None],
                                  None if feats is None else jnp.asarray(feats, jnp.float32)[None])
        return np.asarray(image)[0], stats

    def window(self, stats: Any, before: Maps, after: Maps, box: Box,
               sums: Any = None) -> tuple[np.ndarray, Any, Any]:
        """(the image inside `box` of the scene `after`, the statistics shifted to it, its sums in the window).

        stats: those of the scene `before` (a full render's, or shifted by window renders since);
        before / after: (label, inst, feats) with (H, W) maps and (h, w, F) features inside `box`
        (or None). sums: `before`'s sums in this window when known (what the window render that
        made `before` returned), which saves a pass over `before`.
        """
        check_labels(after[0], self.synth.config.model.label_nc, "the scene's label map")
        if sums is None:
            image, shifted = self._two_passes(*self._variables, stats, _window_maps(before, box),
                                              _window_maps(after, box))
        else:
            image, shifted = self._window(*self._variables, stats, sums, _window_maps(after, box))
        stats, sums = _split_sums(shifted)
        return np.asarray(image)[0], stats, sums


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
