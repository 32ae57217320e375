"""Object-level editing on small maps: ids, boundaries and features updated; undo; scripts; CLI."""
import json
import pathlib
import re

import numpy as np
import pytest
from scipy import ndimage

import feature_helpers as fh
from pix2pixhd_jax.configs import default as default_config, tiny_test
from pix2pixhd_jax import editing
from pix2pixhd_jax.cli import edit as edit_cli
from pix2pixhd_jax.inference import Synthesizer
from pix2pixhd_jax.semantics import instance_edges


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return fh.synthesizer_with_bank(str(tmp_path_factory.mktemp("editing") / "w"))


def _maps():
    """32x64: road, a vegetation block, two cars (26000, 26002) and a person (24000)."""
    label = np.full((32, 64), 7, np.int32)
    inst = label.copy()
    label[:10, :20], inst[:10, :20] = 21, 21
    label[10:20, 0:20], inst[10:20, 0:20] = 26, 26000  # touches the vegetation block
    label[20:30, 30:50], inst[20:30, 30:50] = 26, 26002
    label[5:25, 55:60], inst[5:25, 55:60] = 24, 24000
    return label, inst


def test_relabel_gives_new_ids_and_recomputed_edges():
    label, inst = _maps()
    scene = editing.Scene(label, inst, {26000: np.ones(3, np.float32), 21: np.zeros(3, np.float32)})
    things = (24, 26)
    # car -> vegetation (stuff): the car merges into the vegetation region and keeps its feature.
    veg, new_id = editing.relabel_instance(scene, 26000, 21, thing_classes=things, label_nc=35)
    assert new_id == 21 and (veg.label[10:20, :20] == 21).all() and (veg.inst[10:20, :20] == 21).all()
    assert 26000 not in veg.features and np.array_equal(veg.features[21], np.zeros(3))
    np.testing.assert_array_equal(veg.edges(), np.asarray(instance_edges(veg.inst[None]))[0])
    assert veg.edges()[9:11, 5].sum() == 0 and scene.edges()[9:11, 5].sum() == 2  # the old boundary is gone
    # person -> car (thing): a new car id = max car k + 1, the person's feature copied.
    scene = scene.replace(features={**scene.features, 24000: np.full(3, 0.5, np.float32)})
    car, new_id = editing.relabel_instance(scene, 24000, 26, thing_classes=things)
    assert new_id == 26003 and (car.inst[5:25, 55:60] == 26003).all() and (car.label[5:25, 55:60] == 26).all()
    np.testing.assert_array_equal(car.features[26003], np.full(3, 0.5))
    # A class with no object yet starts at k = 0.
    assert editing.relabel_instance(scene, 26002, 24, thing_classes=things)[1] == 24001
    assert editing.relabel_instance(scene, 26002, 33, thing_classes=(33,))[1] == 33000
    with pytest.raises(KeyError, match="instance 12345 is not in the map"):
        editing.relabel_instance(scene, 12345, 21, thing_classes=things)
    with pytest.raises(ValueError, match=r"class 40 is outside \[0, label_nc=35\)"):
        editing.relabel_instance(scene, 26000, 40, thing_classes=things, label_nc=35)


def test_paint_and_add_object():
    label, inst = _maps()
    scene = editing.Scene(label, inst)
    mask = np.zeros_like(label, bool)
    mask[28:32, :10] = True
    road, rid = editing.paint_region(scene, mask, 8, thing_classes=(26,))
    assert rid == 8 and (road.label[mask] == 8).all() and (road.inst[mask] == 8).all()
    obj, oid = editing.add_object(scene, mask, 26, feature=np.ones(3), cluster=None)
    assert oid == 26003 and (obj.inst[mask] == 26003).all() and obj.edges()[27, 5] == 1
    np.testing.assert_array_equal(obj.features[26003], np.ones(3))
    with pytest.raises(ValueError, match="selects no pixel"):
        editing.paint_region(scene, np.zeros_like(mask), 8, thing_classes=())


def test_editor_operations_resynthesize_and_undo(synth):
    label, inst = _maps()
    ed = editing.Editor(synth, label, inst, seed=0)
    first = ed.image.copy()
    assert set(ed.scene.features) == {7, 21, 24000, 26000, 26002}  # every region got a bank draw
    # The editor's initial render equals synthesize() with the same seed.
    np.testing.assert_array_equal(first, np.asarray(synth.synthesize(label, inst, seed=0)))
    k = synth.bank.num_clusters(26)
    r = ed.set_feature(26002, vector=[1.0, -1.0, 1.0])
    np.testing.assert_array_equal(r.scene.features[26002], [1.0, -1.0, 1.0])
    change = np.abs(r.image.astype(int) - first).mean(-1)
    inside = inst == 26002
    assert change[inside].mean() > 1.2 * change[~inside].mean() > 0  # untrained: see test_inference
    r = ed.set_feature(26000, cluster=k - 1)
    assert r.scene.clusters[26000] == k - 1
    np.testing.assert_array_equal(r.scene.features[26000], synth.bank.center(26, k - 1))
    r = ed.copy_feature(26002, 26000)
    np.testing.assert_array_equal(r.scene.features[26000], [1.0, -1.0, 1.0])
    r = ed.relabel(26000, 21)
    assert r.region == 21 and 26000 not in r.scene.instances()
    mask = np.zeros_like(label, bool)
    mask[2:6, 30:40] = True
    r = ed.add_object(mask, 26, cluster=0)
    assert r.region == 26003 and r.scene.clusters[26003] == 0
    assert len(ed.history) == 5
    for _ in range(5):
        r = ed.undo()
    np.testing.assert_array_equal(r.scene.inst, inst)
    np.testing.assert_array_equal(r.image, first)
    assert {k: v.tolist() for k, v in r.scene.features.items()} == {k: v.tolist() for k, v in ed._initial.features.items()}
    with pytest.raises(IndexError, match="nothing to undo"):
        ed.undo()
    with pytest.raises(ValueError, match="exactly one of cluster= or vector="):
        ed.set_feature(26002)


def test_json_script_and_cli(synth, tmp_path):
    label, inst = _maps()
    script = {"seed": 0, "edits": [
        {"op": "relabel", "instance": {"at": [15, 5]}, "to": "vegetation"},
        {"op": "paint", "class": "sidewalk", "rect": [28, 0, 32, 10]},
        {"op": "add_object", "class": "car", "circle": [5, 40, 3], "cluster": 0},
        {"op": "set_feature", "instance": 26002, "vector": [0.5, 0.5, 0.5]},
        {"op": "undo"},
    ]}
    ed = editing.Editor(synth, label, inst, seed=0)
    results = ed.apply_script(script)
    assert len(results) == 5
    final = ed.scene
    assert (final.label[10:20, :20] == 21).all() and (final.label[28:32, :10] == 8).all()
    assert 26003 in final.instances() and not np.array_equal(final.features[26002], [0.5] * 3)
    with pytest.raises(ValueError, match=r"edit 0 .*unknown op 'explode'"):
        ed.apply_script([{"op": "explode"}])
    with pytest.raises(ValueError, match=r"edit 0 .*unknown class name 'spaceship'"):
        ed.apply_script([{"op": "relabel", "instance": 26002, "to": "spaceship"}])

    path = tmp_path / "edits.json"
    path.write_text(json.dumps({"edits": [{"op": "set_feature", "instance": {"at": [16, 20]}, "cluster": 0},
                                          {"op": "paint", "class": "road", "rect": [0, 0, 8, 8]}]}))
    assert edit_cli.main(["prog", f"--workdir={synth.workdir}", f"--script={path}", f"--out={tmp_path / 'out'}",
                          "--index=0"]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert {"step_000.png", "step_001.png", "step_002.png", "index.html", "final_inst.png"} <= set(written)


def test_editor_geometric_edits_undo_and_redo_restore_exact_maps(synth):
    label, inst = _maps()
    ed = editing.Editor(synth, label, inst, seed=0)
    first = ed.image.copy()
    feature = ed.scene.features[26002].copy()
    steps = [{"op": "move", "instance": 26002, "by": [-4, 6]},
             {"op": "resize", "instance": {"at": [20, 40]}, "scale": 1.5},
             {"op": "flip", "instance": 26002},
             {"op": "delete", "instance": 24000}]
    snapshots = [(ed.scene.label.copy(), ed.scene.inst.copy(), first)]
    for step in steps:
        r = ed.apply_edit(step)
        snapshots.append((r.scene.label.copy(), r.scene.inst.copy(), r.image.copy()))
        assert r.render_seconds > 0
    np.testing.assert_array_equal(ed.scene.features[26002], feature)  # moved, resized, flipped: same look
    hole, car = ed.scene.label[5:25, 55:60], ed.scene.inst[5:25, 55:60] == 26002  # the grown car reaches it
    assert 24000 not in ed.scene.instances() and (hole[~car] == 7).all() and car.any()
    for label_i, inst_i, image_i in reversed(snapshots[:-1]):
        r = ed.apply_edit({"op": "undo"})
        np.testing.assert_array_equal(r.scene.label, label_i)
        np.testing.assert_array_equal(r.scene.inst, inst_i)
        np.testing.assert_array_equal(r.image, image_i)
        assert r.render_seconds == 0.0  # undo reuses the stored image
    for label_i, inst_i, image_i in snapshots[1:]:
        r = ed.redo()
        np.testing.assert_array_equal(r.scene.inst, inst_i)
        np.testing.assert_array_equal(r.image, image_i)
    with pytest.raises(IndexError, match="nothing to redo"):
        ed.redo()
    ed.undo()
    ed.move(26000, 1, 0)  # a new edit drops the redo branch
    assert not ed.future
    # The log replays the whole session, undo and redo included.
    replay = editing.Editor(synth, label, inst, seed=0)
    replay.apply_script(ed.script())
    np.testing.assert_array_equal(replay.scene.inst, ed.scene.inst)
    np.testing.assert_array_equal(replay.image, ed.image)
    bounded = editing.Editor(synth, label, inst, seed=0, max_history=2)
    for dx in (1, 1, 1):
        bounded.move(26002, 0, dx)
    assert len(bounded.history) == 2


@pytest.mark.parametrize("edit, message", [
    ({"op": "paint", "class": 8, "rect": [0, 0, -1, -1]}, r"rect \[0, 0, -1, -1\] is not inside the 32x64 map"),
    ({"op": "add_object", "class": "car", "rect": [30, 60, 40, 70]}, "is not inside the 32x64 map"),
    ({"op": "set_feature", "instance": 26002, "vector": [float("nan"), 0, 0]}, "non-finite"),
    ({"op": "add_object", "class": 26, "circle": [5, 5, 2], "vector": [0, float("inf"), 0]}, "non-finite"),
    ({"op": "relabel", "instance": 26002, "to": 7.9}, "class .* must be an integer, got 7.9"),
    ({"op": "move", "instance": 26002, "by": [0, "2"]}, "by .* must be a number"),
    ({"op": "move", "instance": 26002}, "missing 'by'"),
    ({"op": "move", "instance": 26002, "by": [0, 2], "speed": 3}, r"unknown key\(s\) \['speed'\] for op 'move'"),
    ({"op": "resize", "instance": 26002, "scale": 0}, r"scale 0 must be in"),
    ({"op": "delete", "instance": 12345}, "instance 12345 is not in the map"),
    ({"op": "delete", "instance": {"at": [40, 0]}}, r"pixel \(40, 0\) is outside the 32x64 map"),
    ({"op": "set_feature", "instance": 26002, "cluster": 99}, "cluster 99 of class 26 does not exist"),
    ({"op": "set_feature", "instance": 26002, "cluster": 1.5}, "cluster must be an integer"),
    ({"op": "paint", "class": 8}, "give the region as exactly one of"),
    ({"op": "undo"}, "nothing to undo"),
    ("move", "an edit is a JSON object"),
])
def test_bad_edits_raise_clear_errors_and_change_nothing(synth, edit, message):
    label, inst = _maps()
    ed = editing.Editor(synth, label, inst, seed=0)
    with pytest.raises(ValueError, match=message):
        ed.apply_edit(edit)
    np.testing.assert_array_equal(ed.scene.inst, inst)
    assert not ed.history and not ed.log


def test_bad_scripts_raise_clear_errors(synth):
    ed = editing.Editor(synth, *_maps(), seed=0)
    with pytest.raises(ValueError, match=r"an edit script is a list of edits .* got edits=5"):
        ed.apply_script({"edits": 5})
    with pytest.raises(ValueError, match=r"edit 1 .*unknown op 'explode'"):
        ed.apply_script([{"op": "flip", "instance": 26002}, {"op": "explode"}])


# ----------------------------------------------------------------------------- local edits


def _far_from(mask, px):
    """Pixels farther than `px` (Euclidean) from every pixel of `mask`."""
    return ndimage.distance_transform_edt(~mask) > px


@pytest.mark.parametrize("op", ["set_feature", "relabel", "move"])
def test_local_edits_keep_far_pixels_and_undo_restores(synth, op):
    label, inst = _maps()
    car = inst == 26002
    calls = {"set_feature": lambda ed: ed.set_feature(26002, vector=[1.0, -1.0, 1.0]),
             "relabel": lambda ed: ed.relabel(26002, 27),  # car -> truck: a new id, the same pixels
             "move": lambda ed: ed.move(26002, -3, 5)}
    raw, local = editing.Editor(synth, label, inst, seed=0), editing.Editor(synth, label, inst, seed=0, local=True)
    assert not raw.local and local.local and (local.local_margin_px, local.local_feather_px) == (4, 4)
    first = local.image.copy()
    touched = car | (calls[op](raw).scene.inst != inst)  # the car where it was and where it is now
    r = calls[op](local)
    reach = local.local_margin_px + local.local_feather_px + 1  # + 1: boundary pixels beside the car change too
    far = _far_from(touched, reach)
    assert far.sum() > 200
    np.testing.assert_array_equal(r.image[far], first[far])  # local: far pixels keep their bytes
    assert (raw.image[far] != first[far]).any()  # raw: the untrained G moves far pixels too
    near = ~_far_from(touched, 0)
    np.testing.assert_array_equal(r.image[near], raw.image[near])  # on the edit: the new render as is
    np.testing.assert_array_equal(r.scene.inst, raw.scene.inst)
    np.testing.assert_array_equal(local.undo().image, first)
    np.testing.assert_array_equal(local.redo().image, r.image)


def test_local_switches_at_runtime_and_scripts_replay_it(synth):
    label, inst = _maps()
    ed = editing.Editor(synth, label, inst, seed=0, local=True)
    ed.set_feature(26002, vector=[1.0, -1.0, 1.0])
    ed.local = False
    raw = ed.set_feature(26000, vector=[0.5, 0.5, -1.0]).image
    np.testing.assert_array_equal(raw, ed.render(ed.scene).image)  # off: exactly the generator output
    ed.apply_edit({"op": "local", "on": True})
    ed.move(26000, 1, 0)
    script = ed.script()
    assert script["local"] is True and [e["op"] for e in script["edits"]] == [
        "set_feature", "local", "set_feature", "local", "move"]
    replay = editing.Editor(synth, label, inst, seed=0)
    replay.apply_script(script)
    np.testing.assert_array_equal(replay.image, ed.image)
    assert replay.local
    with pytest.raises(ValueError, match="local must be true or false"):
        ed.apply_edit({"op": "local", "on": "yes"})
    with pytest.raises(ValueError, match="local_margin_px=-2 must be an integer"):
        editing.Editor(synth, label, inst, local_margin_px=-2)
    narrow = editing.Editor(synth, label, inst, seed=0, local=True, local_margin_px=0, local_feather_px=0)
    r = narrow.set_feature(26002, vector=[1.0, -1.0, 1.0])
    np.testing.assert_array_equal(r.image[inst != 26002], narrow._initial_image[inst != 26002])


def test_config_saved_before_the_editing_section_still_loads(tmp_path):
    config = tiny_test.get_config()  # no instance features: no bank to build
    config.num_devices = 1
    del config["editing"]
    workdir = fh.make_workdir(str(tmp_path / "old"), config)
    label, inst = _maps()
    bare = Synthesizer.from_workdir(workdir)
    assert "editing" not in bare.config
    assert not editing.Editor(bare, label, inst).local  # raw renders need no editing section
    with pytest.raises(ValueError, match="predates the editing section.*defaults="):
        editing.Editor(bare, label, inst, local=True)
    assert editing.Editor(bare, label, inst, local=True, local_margin_px=2, local_feather_px=1).local_margin_px == 2
    completed = Synthesizer.from_workdir(workdir, defaults=default_config.get_config())
    assert completed.config.editing.to_dict() == default_config.get_config().editing.to_dict()
    ed = editing.Editor(completed, label, inst, local=True)
    assert (ed.local_margin_px, ed.local_feather_px) == (4, 4)


def test_cli_local_flag_and_script_field(synth, tmp_path):
    from pix2pixhd_jax import inputs
    from PIL import Image

    ex = inputs.load_inputs(synth.config, num=1)[0]  # the scene --index=0 edits
    inst = np.asarray(ex["inst"])
    target = max((i for i in np.unique(inst) if i >= 1000), key=lambda i: (inst == i).sum())
    path = tmp_path / "edits.json"
    path.write_text(json.dumps({"local": True, "edits": [{"op": "set_feature", "instance": int(target),
                                                          "vector": [1.0, -1.0, 1.0]}]}))
    far = _far_from(inst == target, 8)
    for flags, kept in (([], True), (["--nolocal"], False)):  # the script's "local", then the flag overriding it
        out = tmp_path / ("out" + "".join(flags))
        assert edit_cli.main(["prog", f"--workdir={synth.workdir}", f"--script={path}", f"--out={out}",
                              "--index=0", *flags]) == 0
        before, after = (np.asarray(Image.open(out / f"step_00{i}.png")) for i in (0, 1))
        assert np.array_equal(after[far], before[far]) == kept


def _readme_edit_example():
    """The README's edit script (the heredoc) and the --index of the edit command after it."""
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"cat > edits\.json <<'JSON'\n(.*?)\nJSON\n(python -m pix2pixhd_jax\.cli\.edit [^\n]*)",
                      text, re.S)
    assert block, "the README's edit example (cat > edits.json <<'JSON' ... JSON + the edit command) is gone"
    index = re.search(r"--index=(\d+)", block.group(2))
    assert "--workdir=runs/feat" in block.group(2) and index
    return json.loads(block.group(1)), int(index.group(1))


def test_readme_edit_script_points_at_cars():
    from pix2pixhd_jax.configs import synthetic_features
    from pix2pixhd_jax import inputs

    script, index = _readme_edit_example()
    config = synthetic_features.get_config()  # runs/feat, as the README trains it
    ex = inputs.load_inputs(config, num=index + 1)[index]  # what cli/edit.py loads for --index
    label = np.asarray(ex["label"])
    ats = [e["instance"]["at"] for e in script["edits"] if isinstance(e.get("instance"), dict)]
    assert len(ats) == 2
    for y, x in ats:
        assert label[y, x] == 26, f"README edit 'at': [{y}, {x}] lands on class {label[y, x]}, not on a car"
    for e in script["edits"]:
        if e["op"] == "add_object":  # the new car goes on free road, not over another object
            y0, x0, y1, x1 = e["rect"]
            assert (label[y0:y1, x0:x1] == 7).all()


# ----------------------------------------------------------------------------- colour


@pytest.fixture(scope="module")
def colour_synth(tmp_path_factory):
    return fh.synthesizer_with_bank(str(tmp_path_factory.mktemp("colour") / "w"), fh.colour_config())


def test_set_colour_sets_the_colour_channels_undo_restores_and_scripts_replay(colour_synth):
    label, inst = _maps()
    assert colour_synth.colour_features and colour_synth.config.model.feat_num == 4
    ed = editing.Editor(colour_synth, label, inst, seed=0, colour_corrections=0)  # the feature as asked
    first, before = ed.image.copy(), {k: v.copy() for k, v in ed.scene.features.items()}
    r = ed.set_colour(26002, [200, 30, 0])
    expected = np.array([200 / 127.5 - 1, 30 / 127.5 - 1, -1.0, before[26002][3]], np.float32)
    np.testing.assert_array_equal(r.scene.features[26002], expected)  # channel 3 is kept
    assert r.region == 26002 and r.scene.clusters[26002] is None and (r.image != first).any()
    assert all(np.array_equal(r.scene.features[k], v) for k, v in before.items() if k != 26002)
    assert editing.feature_colour(r.scene.features[26002]) == [200, 30, 0]
    r = ed.apply_edit({"op": "set_colour", "at": [15, 5], "rgb": [0, 0, 255]})  # JSON, by a pixel
    np.testing.assert_array_equal(r.scene.features[26000][:3], [-1, -1, 1])
    assert ed.script()["edits"] == [{"op": "set_colour", "instance": 26002, "rgb": [200.0, 30.0, 0.0]},
                                    {"op": "set_colour", "at": [15, 5], "rgb": [0, 0, 255]}]
    replay = editing.Editor(colour_synth, label, inst, seed=0, colour_corrections=0)
    replay.apply_script(ed.script())
    np.testing.assert_array_equal(replay.image, ed.image)
    np.testing.assert_array_equal(replay.scene.features[26000], ed.scene.features[26000])
    ed.undo()
    r = ed.undo()
    np.testing.assert_array_equal(r.image, first)
    assert all(np.array_equal(r.scene.features[k], v) for k, v in before.items())
    # Local: the recolour is composited in around the car; pixels far from it keep their bytes.
    local = editing.Editor(colour_synth, label, inst, seed=0, local=True)
    far = _far_from(inst == 26002, local.local_margin_px + local.local_feather_px + 1)
    np.testing.assert_array_equal(local.set_colour(26002, [200, 30, 0]).image[far], first[far])


def test_set_colour_corrects_the_feature_by_what_the_object_alone_renders_short_and_shows_the_asked_colour(
        colour_synth):
    label, inst = _maps()
    ed = editing.Editor(colour_synth, label, inst, seed=0)
    assert ed.editor_options.colour_corrections == 1  # configs/default.py's editing.colour_corrections
    bound = ed.editor_options.colour_feature_bound
    before = ed.scene.features[26002].copy()
    asked = editing.colour_feature([200, 30, 0], before)
    rendered = ed.rendered_colour(26002, asked)
    want = np.clip(asked[:3] + (np.array([200, 30, 0]) - rendered) / 127.5, -bound, bound)
    r = ed.set_colour(26002, [200, 30, 0])
    np.testing.assert_allclose(r.scene.features[26002][:3], want, rtol=1e-6)
    assert r.scene.features[26002][3] == before[3] and not np.allclose(want, asked[:3])
    # What the page shows is the colour asked for, not the corrected feature's; other features as ever.
    assert ed.colour_shown(r.scene.features[26002]) == [200, 30, 0]
    assert ed.colour_shown(before) == editing.feature_colour(before)
    # The object alone: its window's render, with its mean taken over its pixels only.
    window = ed.rendered_colour(26002, r.scene.features[26002])
    assert window.shape == (3,) and not np.allclose(window, rendered)
    # Replaying the script corrects the same way.
    replay = editing.Editor(colour_synth, label, inst, seed=0)
    replay.apply_script(ed.script())
    np.testing.assert_array_equal(replay.scene.features[26002], r.scene.features[26002])


def test_colour_correction_closes_in_on_a_dull_renderer_within_the_bound():
    dull = lambda v: 0.7 * (np.asarray(v[:3], np.float64) + 1) * 127.5 + 20  # renders 70% of the asked colour + 20
    start = np.array([0.0, 0.0, 0.0, 0.5], np.float32)
    errors = []
    for n in range(4):
        v = editing.corrected_colour_feature([200, 100, 40], start, dull, corrections=n, bound=1.5)
        errors.append(np.abs(dull(v) - [200, 100, 40]).max())
        assert v[3] == 0.5 and np.all(np.abs(v[:3]) <= 1.5)
    assert errors[0] > 20 and errors[1] < 0.4 * errors[0] and errors[3] < 0.05 * errors[0]
    # A colour the renderer cannot reach stops at the bound instead of running away.
    v = editing.corrected_colour_feature([255, 255, 255], start, dull, corrections=5, bound=1.5)
    np.testing.assert_allclose(v[:3], 1.5)


def test_set_colour_is_refused_by_a_model_not_anchored_to_colour(synth):
    assert not synth.colour_features
    ed = editing.Editor(synth, *_maps(), seed=0)
    message = (r"this model's features are not anchored to colour \(loss.lambda_feature_colour=0\): "
               "pick a cluster or a vector instead")
    with pytest.raises(ValueError, match=message):
        ed.set_colour(26002, [200, 30, 0])
    with pytest.raises(ValueError, match=r"edit 0 .*" + message):
        ed.apply_script([{"op": "set_colour", "instance": 26002, "rgb": [200, 30, 0]}])
    assert not ed.history and not ed.log


BAD_RGB = [[256, 0, 0], [-1, 0, 0], [0, 0], [0, 0, 0, 0], [float("nan"), 0, 0], [float("inf"), 0, 0],
           ["1", "2", "3"], [True, 0, 0], "red", 128, None]


@pytest.mark.parametrize("edit, message", [
    *[({"op": "set_colour", "instance": 26002, "rgb": rgb}, r"rgb must be three numbers in \[0, 255\]")
      for rgb in BAD_RGB],
    ({"op": "set_colour", "instance": 26002}, "missing 'rgb'"),
    ({"op": "set_colour", "instance": 12345, "rgb": [0, 0, 0]}, "instance 12345 is not in the map"),
])
def test_set_colour_refuses_bad_requests(colour_synth, edit, message):
    label, inst = _maps()
    ed = editing.Editor(colour_synth, label, inst, seed=0)
    with pytest.raises(ValueError, match=message):
        ed.apply_edit(edit)
    np.testing.assert_array_equal(ed.scene.features[26002], ed._initial.features[26002])
    assert not ed.history and not ed.log


def test_cli_refuses_a_deeply_nested_script_in_one_line(synth, tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)  # used to end in a RecursionError traceback
    out = tmp_path / "out"
    assert edit_cli.main(["prog", f"--workdir={synth.workdir}", f"--script={path}", f"--out={out}"]) == 1
    err = capsys.readouterr().err
    assert "nests arrays or objects too deeply" in err and str(path) in err and "Traceback" not in err
    assert not out.exists()  # refused before anything is written


def test_deeply_nested_python_edit_is_a_value_error(synth):
    deep = []
    for _ in range(100_000):  # built iteratively: no JSON text involved
        deep = [deep]
    ed = editing.Editor(synth, *_maps(), seed=0)
    with pytest.raises(ValueError, match="edit 3: the edit nests arrays or objects too deeply"):
        ed.apply_edit({"op": "move", "instance": 26002, "by": deep}, index=3)
    assert not ed.history and not ed.log


def test_colour_correction_settings_are_checked_where_read():
    from pix2pixhd_jax.configs import default
    from pix2pixhd_jax.editing.options import EditorOptions

    config = default.get_config()
    assert (EditorOptions.from_config(config).colour_corrections, EditorOptions.from_config(config).colour_feature_bound) \
        == (config.editing.colour_corrections, config.editing.colour_feature_bound)
    config.editing.colour_corrections = -1
    with pytest.raises(ValueError, match=r"editing.colour_corrections must be a whole number >= 0, got -1"):
        EditorOptions.from_config(config)
    config.editing.colour_corrections, config.editing.colour_feature_bound = 1, 0.5
    with pytest.raises(ValueError, match=r"editing.colour_feature_bound must be a number >= 1 .*got 0.5"):
        EditorOptions.from_config(config)
