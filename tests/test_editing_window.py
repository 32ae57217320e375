"""Local edits that render a window: the window box, the norm statistics, the bound against a full render."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import feature_helpers as fh
from pix2pixhd_jax import editing
from pix2pixhd_jax.editing import compositing, session, window
from pix2pixhd_jax.features import feature_map
from pix2pixhd_jax.models import factory
from pix2pixhd_jax.models.layers import NORM_STATS, WINDOW_SUMS

# How far a window render (editing.window_context_px = 32) may be from a full render of the edited
# scene: (mean, max) absolute difference in 0-255 levels over the pixels the edit composites. An
# edit that keeps the object's class (move, cluster) shifts the statistics little; relabelling or
# deleting a large object (6% of the image) more. Measured on the editor workflow's model at
# 256x128 and 1024x512 (benchmarks/RESULTS.md): at most 0.47 / 3 and 3.6 / 31.
BOUNDS = {"move": (0.5, 4), "move apart": (0.5, 4), "cluster": (0.5, 4), "relabel": (4.0, 32), "delete": (4.0, 32)}
# A small edit after a few others: each edit's first-order statistics add up. Measured in the test
# below (a new look for a person after three moves): 0.63 / 3 with a pass over the window first
# (0.67 / 3 with its sums from the blocks).
LATER_BOUND = (1.0, 6)

H, W = 256, 512


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return fh.synthesizer_with_bank(str(tmp_path_factory.mktemp("editing_window") / "w"))


@pytest.fixture(scope="module")
def maps():
    label, inst, _ = fh.scene(0, width=W, height=H)
    return label, inst


def _largest_car(inst: np.ndarray) -> int:
    ids = np.unique(inst[inst // 1000 == 26])
    return int(ids[np.argmax([(inst == i).sum() for i in ids])])


def _farthest_from_largest_car(inst: np.ndarray) -> int:
    """The object farthest from the largest car (a small person in the test scene)."""
    largest = _largest_car(inst)
    centre = np.argwhere(inst == largest).mean(0)
    things = [i for i in np.unique(inst).tolist() if i >= 1000 and i != largest]
    return max(things, key=lambda i: np.abs(np.argwhere(inst == i).mean(0) - centre).sum())


def test_window_box_is_aligned_covers_the_blend_and_is_none_for_the_whole_image():
    changed = np.zeros((128, 256), bool)
    changed[50:60, 100:130] = True
    rows, cols = window.window_box(changed, reach=9, context_px=16, divisor=8)
    for axis, (s, lo, hi) in enumerate(((rows, 50, 60), (cols, 100, 130))):
        assert s.start % 8 == 0 and (s.stop - s.start) in window.window_lengths(changed.shape[axis], 8)
        assert s.start <= lo - 25 and s.stop >= hi + 25  # reach + context on both sides
    assert window.window_box(changed, reach=9, context_px=200, divisor=8) is None  # the whole image anyway
    assert window.window_box(np.zeros_like(changed), reach=9, context_px=16, divisor=8) is None  # nothing changed
    assert window.window_lengths(128, 8) == [8, 16, 24, 32, 48, 64, 96, 128]
    # Changes far apart (a move's old and new place) render one window each when that is smaller.
    apart = np.zeros((128, 512), bool)
    apart[50:60, 20:40] = apart[50:60, 460:480] = True
    boxes = window.window_boxes(apart, reach=9, context_px=16, divisor=8)
    assert len(boxes) == 2 and sum(map(window.box_area, boxes)) < window.box_area(window.window_box(apart, 9, 16, 8))
    for box, (lo, hi) in zip(sorted(boxes, key=lambda b: b[1].start), ((20, 40), (460, 480))):
        assert box[1].start <= max(0, lo - 25) and box[1].stop >= min(512, hi + 25) and box[0].start <= 25 \
            and box[0].stop >= 85
    assert window.window_boxes(changed, reach=9, context_px=16, divisor=8) == [(rows, cols)]  # one group


def test_init_and_training_see_no_statistics_and_given_ones_reproduce_the_full_render(synth, maps):
    nets, cfg = synth.nets, synth.config.model
    # The init's variable tree (its shapes: eval_shape traces the same init without compiling it).
    variables = jax.eval_shape(lambda: factory.init_generator_variables(
        nets, cfg, jax.random.PRNGKey(0), jax.random.PRNGKey(1), height=32, width=64))
    assert NORM_STATS not in variables["generator"] and WINDOW_SUMS not in variables["generator"]
    label, inst = maps
    feats = synth.feature_map(label, inst, synth.region_features(label, inst, seed=0))[None]
    g_in = jnp.concatenate([factory.label_encoding({"label": label[None], "inst": inst[None]}, cfg), feats], -1)
    params = {"params": synth.g_params["generator"], **synth.g_collections["generator"]}
    # Jitted: an eager G at 256x512 compiles every op on its own (3x the CPU).
    apply = jax.jit(nets.generator.apply, static_argnums=2, static_argnames="mutable")
    plain = apply(params, g_in, False)
    captured, stats = apply(params, g_in, False, mutable=(NORM_STATS,))
    np.testing.assert_array_equal(captured, plain)  # recording the statistics leaves the output as it was
    given = apply({**params, **stats}, g_in, False)
    np.testing.assert_allclose(given, plain, atol=1e-5)
    # A divisor-aligned window with the whole image's statistics matches the full render away from
    # its border; normalised by its own statistics it does not.
    win = (slice(32, 96), slice(64, 192))
    inner = (slice(24, 40), slice(40, 88))  # > the tiny G's receptive field from the window's border
    with_stats = apply({**params, **stats}, g_in[:, win[0], win[1]], False)[0]
    own = apply(params, g_in[:, win[0], win[1]], False)[0]
    full = np.asarray(plain[0][win])
    np.testing.assert_allclose(np.asarray(with_stats)[inner], full[inner], atol=1e-4)
    assert np.abs(np.asarray(own)[inner] - full[inner]).max() > 1e-2


@pytest.fixture
def passes(synth, monkeypatch):
    """The window renders made in this test by where each window's sums came from: 'blocks', 'known'
    (one pass) or 'pass' (two)."""
    made, renderer = [], window.renderer_for(synth)
    for name, source in (("_from_blocks", "blocks"), ("_window", "known"), ("_two_passes", "pass")):
        jitted = getattr(renderer, name)
        monkeypatch.setattr(renderer, name, lambda *a, jitted=jitted, source=source: made.append(source) or jitted(*a))
    return made


@pytest.mark.parametrize("op", ["move", "move apart", "cluster", "relabel", "delete"])
def test_window_render_stays_within_the_bound_of_a_full_render(synth, maps, op, passes):
    label, inst = maps
    car, person = _largest_car(inst), _farthest_from_largest_car(inst)
    edits = {"move": lambda e: e.move(car, 0, 6), "cluster": lambda e: e.set_feature(car, cluster=2),
             "relabel": lambda e: e.relabel(car, 27), "delete": lambda e: e.delete(car),
             "move apart": lambda e: e.move(person, 0, 100)}  # old and new place apart: two windows
    full_ed = editing.Editor(synth, label, inst, seed=0, local=True, window_context_px=0)
    win_ed = editing.Editor(synth, label, inst, seed=0, local=True, window_context_px=32)
    np.testing.assert_array_equal(win_ed.image, full_ed.image)  # the first render is a full one
    before = full_ed.scene
    full, windowed = edits[op](full_ed), edits[op](win_ed)
    changed = win_ed.changed(before)
    after = win_ed.scene  # per-region feature comparison == the per-pixel one
    np.testing.assert_array_equal(changed, compositing.changed_region(
        before.label, before.inst, after.label, after.inst, feature_map(before.inst, before.features),
        feature_map(after.inst, after.features)))
    boxes = win_ed._last_window[1]
    assert len(boxes) == (2 if op == "move apart" else 1) and sum(map(window.box_area, boxes)) < H * W
    # The first edit: a move takes one pass per window (the sums from the full render's blocks), the others two.
    assert passes == ["blocks" if op.startswith("move") else "pass"] * len(boxes)
    weights = compositing.blend_weights(changed, win_ed.local_margin_px, win_ed.local_feather_px)
    inside = weights > 0
    diff = np.abs(windowed.image.astype(int) - full.image.astype(int))
    np.testing.assert_array_equal(diff[~inside], 0)  # outside the blend both keep the previous bytes
    mean_bound, max_bound = BOUNDS[op]
    assert diff[inside].mean() <= mean_bound and diff[inside].max() <= max_bound, (diff[inside].mean(),
                                                                                    diff[inside].max())


def test_undo_brings_back_the_statistics_and_a_replay_is_bit_exact(synth, maps):
    label, inst = maps
    car = _largest_car(inst)
    ed = editing.Editor(synth, label, inst, seed=0, local=True, window_context_px=32)
    direct = editing.Editor(synth, label, inst, seed=0, local=True, window_context_px=32)
    ed.relabel(car, 27)
    ed.undo()
    # The move after the undo starts from the opened scene's statistics, as a move made first does.
    np.testing.assert_array_equal(ed.move(car, 0, 6).image, direct.move(car, 0, 6).image)
    replay = editing.Editor(synth, label, inst, seed=0, window_context_px=32)
    replay.apply_script(ed.script())
    np.testing.assert_array_equal(replay.image, ed.image)
    # Local off: a full render (the statistics refresh with it).
    ed.local = False
    np.testing.assert_array_equal(ed.flip(car).image, np.asarray(synth.synthesize(ed.scene.label, ed.scene.inst,
                                                                                  _features(synth, ed.scene))))


def _features(synth, scene):
    return feature_map(scene.inst, scene.features)[None]


def test_a_second_edit_in_the_same_window_reuses_the_sums_of_the_first(synth, maps):
    label, inst = maps
    car = _largest_car(inst)
    reused = editing.Editor(synth, label, inst, seed=0, local=True, window_context_px=32)
    fresh = editing.Editor(synth, label, inst, seed=0, local=True, window_context_px=32)
    for ed in (reused, fresh):
        ed.move(car, 0, 4)
    box = reused._last_window[1]
    fresh._known = []  # forces the pass over the current scene
    a, b = reused.move(car, 0, -4), fresh.move(car, 0, -4)
    assert reused._last_window[1] == box  # the same window both times: the sums were reused
    assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 1


def test_warm_up_compiles_the_in_place_windows_and_keeps_the_session_as_it_was(synth):
    # A 256x128 street: its objects take fewer window shapes than the 512x256 one's seven (each shape
    # compiles two renders), and its largest car still gets a window smaller than the image.
    label, inst, _ = fh.scene(0, width=256, height=128)
    car = _largest_car(inst)
    ed = editing.Editor(synth, label, inst, seed=0, local=True, window_context_px=32)
    image, stats, last = ed.image.copy(), ed._norm_stats, ed._last_window
    shapes = ed.warm_up_windows()
    box = ed.window_of(ed.scene.inst == car)
    assert (box[0].stop - box[0].start, box[1].stop - box[1].start) in shapes and len(shapes) >= 2
    np.testing.assert_array_equal(ed.image, image)
    assert ed._norm_stats is stats and ed._last_window == last
    # A nudge of the car and back renders that window: compiled already, both ways (a first move, then
    # the next edit). Any jit cache miss traces the function again; JAX reports each trace as an event.
    traces = []
    record = lambda event, duration, **kw: traces.append(event) if event == "/jax/core/compile/jaxpr_trace_duration" else None
    jax.monitoring.register_event_duration_secs_listener(record)
    try:
        ed.move(car, 0, 1)
        ed.move(car, 0, -1)
    finally:
        jax.monitoring.unregister_event_duration_listener(record)
    assert ed._last_window[1] == (box,)
    assert traces == []


def test_an_edit_inside_the_last_window_renders_that_window_in_one_pass(synth, maps):
    label, inst = maps
    ids = np.unique(inst[inst // 1000 == 26])
    car = int(ids[np.argsort([(inst == i).sum() for i in ids])[1]])  # small: its own window is narrower
    full_ed = editing.Editor(synth, label, inst, seed=0, local=True, window_context_px=0)
    win_ed = editing.Editor(synth, label, inst, seed=0, local=True, window_context_px=32)
    for ed in (full_ed, win_ed):
        ed.move(car, 0, 24)
    moved_box = win_ed._last_window[1]
    before = win_ed.scene
    full, windowed = full_ed.set_feature(car, cluster=2), win_ed.set_feature(car, cluster=2)
    changed = win_ed.changed(before)
    reach = win_ed.local_margin_px + win_ed.local_feather_px + 1
    own_box = window.window_box(changed, reach, 32, synth.divisor)
    assert (own_box,) != moved_box and win_ed._last_window[1] == moved_box  # the move's window, reused
    inside = compositing.blend_weights(changed, win_ed.local_margin_px, win_ed.local_feather_px) > 0
    diff = np.abs(windowed.image.astype(int) - full.image.astype(int))[inside]
    mean_bound, max_bound = BOUNDS["cluster"]
    assert diff.mean() <= mean_bound and diff.max() <= max_bound, (diff.mean(), diff.max())


def test_later_moves_take_the_sums_a_window_recorded_or_the_blocks_the_windows_updated(synth, maps, passes):
    label, inst = maps
    largest, far = _largest_car(inst), _farthest_from_largest_car(inst)
    full_ed = editing.Editor(synth, label, inst, seed=0, local=True, window_context_px=0)
    win_ed = editing.Editor(synth, label, inst, seed=0, local=True, window_context_px=32)
    look = np.full(synth.options.feat_num, 0.5, np.float32)
    steps = [  # edit, where its window's sums come from, its bound
        (lambda e: e.move(largest, 0, 6), "blocks", "move"),  # the full render's
        (lambda e: e.move(far, 0, 6), "blocks", "move"),  # the full render's, the statistics moved since
        (lambda e: e.move(largest, 0, -6), "known", "move"),  # its move recorded them, nothing touched them since
        (lambda e: e.set_feature(far, vector=look), "pass", "later"),  # not a move: a pass over the window first
    ]
    for edit, source, bound in steps:
        before, passes[:] = win_ed.scene, []
        windowed, full = edit(win_ed), edit(full_ed)
        assert passes == [source]
        inside = compositing.blend_weights(win_ed.changed(before), win_ed.local_margin_px,
                                           win_ed.local_feather_px) > 0
        diff = np.abs(windowed.image.astype(int) - full.image.astype(int))[inside]
        mean_bound, max_bound = LATER_BOUND if bound == "later" else BOUNDS[bound]
        assert diff.mean() <= mean_bound and diff.max() <= max_bound, (bound, diff.mean(), diff.max())


def test_a_long_session_keeps_few_block_sums_and_renders_in_full_past_them(synth, maps, passes):
    label, inst = maps
    car = _largest_car(inst)
    ed = editing.Editor(synth, label, inst, seed=0, local=True, window_context_px=32)
    steps = 6
    assert session.KEPT_NORM_STATES < steps
    for i in range(steps):
        ed.move(car, 0, 2 if i % 2 == 0 else -2)
    # Each state's block sums are the size of a layer's activations / 64 (0.6 GB at 2048x1024): bounded.
    assert len(ed._stats_of) <= session.KEPT_NORM_STATES
    for _ in range(steps):
        ed.undo()
    # The opened scene's sums were dropped: its next edit renders in full, as with windows off.
    full_ed = editing.Editor(synth, label, inst, seed=0, local=True, window_context_px=0)
    passes.clear()
    np.testing.assert_array_equal(ed.move(car, 0, 6).image, full_ed.move(car, 0, 6).image)
    assert passes == []
