"""The editor's HTTP API through the ASGI test client: scenes, every op, undo/redo, scripts, bad requests."""
import base64
import io
import re

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

import feature_helpers as fh
from pix2pixhd_jax.configs import tiny_test
from pix2pixhd_jax import editing
from pix2pixhd_jax.cli import editor as editor_cli
from pix2pixhd_jax.editing.server import codec
from pix2pixhd_jax.editing.server.app import Limits, make_app
from pix2pixhd_jax.inference import Synthesizer

LIMITS = Limits(max_scenes=3, max_upload_bytes=64 << 10)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return fh.synthesizer_with_bank(str(tmp_path_factory.mktemp("editor_api") / "w"))


@pytest.fixture(scope="module")
def client(synth):
    # Server errors surface as exceptions here: a request that should be a 4xx can never pass as a 500.
    with TestClient(make_app(synth, limits=LIMITS)) as c:
        yield c


def _png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def _inst(data) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(data["inst_raw"]), "<u2")
    return raw.reshape(data["height"], data["width"]).astype(np.int32)


def _new_scene(client, index=0):
    r = client.post("/api/scenes", json={"index": index})
    assert r.status_code == 200, r.text
    return r.json()


def _edit(client, scene_id, op, status=200):
    r = client.post(f"/api/scenes/{scene_id}/edits", json=op)
    assert r.status_code == status, r.text
    return r.json()


def _largest_object(data) -> dict:
    return max((row for row in data["instances"] if row["id"] >= 1000), key=lambda row: row["area"])


def test_page_static_files_and_info(client, synth):
    page = client.get("/")
    assert page.status_code == 200 and "/static/editor.js" in page.text
    assert client.get("/static/editor.js").status_code == 200
    info = client.get("/api/info").json()
    assert info["uses_features"] and info["test_scenes"] == LIMITS.test_scenes
    assert info["colour_features"] is False  # features not anchored to colour: no colour control
    assert len(info["classes"]) == synth.config.model.label_nc
    car = info["classes"][26]
    assert car == {"id": 26, "name": "car", "color": [0, 0, 142], "thing": True}
    assert info["clusters"]["26"] == synth.bank.num_clusters(26) > 0


def test_scene_from_the_test_split_and_every_op(client, synth):
    data = _new_scene(client, 1)
    label, inst, _ = fh.scene(1)  # tiny_test's test split: the same synthetic generator
    assert (data["height"], data["width"]) == (32, 64) and data["render_ms"] > 0
    image = _decode(data["image_png"])
    assert image.shape == (32, 64, 3) and image.dtype == np.uint8
    maps_label, maps_inst = _decode(data["label_png"]), _decode(data["inst_png"])
    assert maps_inst.dtype == np.uint16 and np.array_equal(maps_inst, _inst(data))
    ed = editing.Editor(synth, maps_label, maps_inst, seed=synth.config.features.sample_seed)
    np.testing.assert_array_equal(image, ed.image)  # the editor renders what synthesize would
    sid, car = data["scene_id"], _largest_object(data)
    cid, cluster = car["id"], car["cluster"]
    before = _inst(data)

    moved = _edit(client, sid, {"op": "move", "instance": cid, "by": [1, 3]})
    ys, xs = np.nonzero(before == cid)
    keep = (ys + 1 < 32) & (xs + 3 < 64)
    assert (_inst(moved)[ys[keep] + 1, xs[keep] + 3] == cid).all()
    assert moved["region"] == cid and {r["id"]: r["cluster"] for r in moved["instances"]}[cid] == cluster
    k = synth.bank.num_clusters(26)
    ops = [
        {"op": "set_feature", "instance": cid, "cluster": (cluster + 1) % k},
        {"op": "set_feature", "instance": {"at": [int(ys[0]) + 1, int(xs[0]) + 3]}, "vector": [0.5, -0.5, 0.25]},
        {"op": "resize", "instance": cid, "scale": 1.5},
        {"op": "flip", "instance": cid},
        {"op": "relabel", "instance": cid, "to": "truck"},
        {"op": "paint", "class": "sidewalk", "rect": [28, 0, 32, 16]},
        {"op": "paint", "class": 21, "brush": {"radius": 2, "points": [[2, 2], [2, 20], [6, 20]]}},
        {"op": "add_object", "class": "car", "rect": [20, 40, 26, 52], "cluster": 0},
        {"op": "add_object", "class": "person", "circle": [10, 50, 3]},
        {"op": "copy_feature", "src": 7, "dst": 21},
    ]
    for op in ops:
        out = _edit(client, sid, op)
        assert out["can_undo"] and not out["can_redo"] and out["render_ms"] > 0
        # The table is updated for the regions an edit touched; it equals one made from the maps anew.
        keys = ("id", "class", "class_name", "bbox", "area")
        assert [{k: r[k] for k in keys} for r in out["instances"]] == codec.instance_geometry(
            _decode(out["label_png"]), _inst(out))
    assert (_decode(out["label_png"])[28:32, :16] == 8).all()
    assert any(r["class"] == 27 for r in out["instances"]) and any(r["class"] == 24 for r in out["instances"])
    last = out
    undone = client.post(f"/api/scenes/{sid}/undo").json()
    assert undone["can_redo"] and undone["render_ms"] == 0
    redone = client.post(f"/api/scenes/{sid}/redo").json()
    assert redone["image_png"] == last["image_png"] and redone["inst_raw"] == last["inst_raw"]
    _edit(client, sid, {"op": "delete", "instance": {"at": [10, 50]}})

    # The script replays the session with the library (and so with the edit CLI) exactly.
    script = client.get(f"/api/scenes/{sid}/script").json()
    assert script["scene"] == {"index": 1} and len(script["edits"]) == 2 + len(ops) + 2
    state = client.get(f"/api/scenes/{sid}").json()
    ed.apply_script(script)
    np.testing.assert_array_equal(ed.scene.inst, _inst(state))
    np.testing.assert_array_equal(ed.image, _decode(state["image_png"]))

    swatches = client.get(f"/api/scenes/{sid}/swatches", params={"instance": 7}).json()
    assert [s["cluster"] for s in swatches["swatches"]] == list(range(synth.bank.num_clusters(7)))
    assert _decode(swatches["swatches"][0]["png"]).ndim == 3


def test_local_edits_are_on_by_default_and_switch_per_scene(client, synth):
    from scipy import ndimage

    assert client.get("/api/info").json()["local"] is True
    data = _new_scene(client)
    sid, car = data["scene_id"], _largest_object(data)
    assert data["local"] is True
    far = ndimage.distance_transform_edt(_inst(data) != car["id"]) > 9  # beyond margin + feather + the boundary ring
    before = _decode(data["image_png"])
    local = _edit(client, sid, {"op": "relabel", "instance": car["id"], "to": "truck"})
    np.testing.assert_array_equal(_decode(local["image_png"])[far], before[far])
    off = client.post(f"/api/scenes/{sid}/local", json={"local": False})
    assert off.status_code == 200, off.text
    off = off.json()
    assert off["local"] is False and off["render_ms"] == 0 and off["num_edits"] == local["num_edits"]
    assert off["image_png"] == local["image_png"] and off["can_undo"] and not off["can_redo"]
    raw = _edit(client, sid, {"op": "relabel", "instance": local["region"], "to": "bus"})
    assert (_decode(raw["image_png"])[far] != before[far]).any()  # raw render: far pixels move too
    script = client.get(f"/api/scenes/{sid}/script").json()
    assert script["local"] is True and [e["op"] for e in script["edits"]] == ["relabel", "local", "relabel"]
    assert client.get(f"/api/scenes/{sid}").json()["local"] is False
    assert _new_scene(client)["local"] is True  # another tab keeps its own setting
    r = client.post("/api/scenes", json={"index": 0, "local": False})
    assert r.status_code == 200 and r.json()["local"] is False
    label, inst, _ = fh.scene(2)
    r = client.post("/api/scenes", files={"label": ("l.png", _png(label.astype(np.uint8)), "image/png")},
                    data={"local": "false"})
    assert r.status_code == 200 and r.json()["local"] is False
    for path, kwargs, message in [
        (f"/api/scenes/{sid}/local", {"json": {"local": "yes"}}, r'takes JSON \{"local": true\}'),
        (f"/api/scenes/{sid}/local", {"json": {"on": True}}, r'takes JSON \{"local": true\}'),
        ("/api/scenes/nope/local", {"json": {"local": True}}, "unknown scene id"),
        ("/api/scenes", {"json": {"index": 0, "local": 1}}, "local must be true or false, got 1"),
        ("/api/scenes", {"files": {"label": ("l.png", _png(label.astype(np.uint8)), "image/png")},
                         "data": {"local": "maybe"}}, "local must be true or false, got 'maybe'"),
    ]:
        r = client.post(path, **kwargs)
        assert 400 <= r.status_code < 500 and re.search(message, r.json()["error"]), (path, r.text)
    no_local = TestClient(make_app(synth, limits=LIMITS, local=False))
    assert no_local.get("/api/info").json()["local"] is False and _new_scene(no_local)["local"] is False


def test_uploaded_pngs_become_a_scene(client):
    label, inst, _ = fh.scene(2)
    r = client.post("/api/scenes", files={"label": ("l.png", _png(label.astype(np.uint8)), "image/png"),
                                          "inst": ("i.png", _png(inst.astype(np.uint16)), "image/png")})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["source"] == {"upload": True}
    np.testing.assert_array_equal(_inst(data), inst)
    np.testing.assert_array_equal(_decode(data["label_png"]), label)
    alone = client.post("/api/scenes", files={"label": ("l.png", _png(label.astype(np.uint8)), "image/png")})
    assert alone.status_code == 200 and np.array_equal(_inst(alone.json()), label)  # no inst: regions = classes


def test_two_scenes_are_isolated_and_old_scenes_are_evicted(client):
    a, b = _new_scene(client), _new_scene(client)
    assert a["scene_id"] != b["scene_id"]
    car = _largest_object(a)
    _edit(client, a["scene_id"], {"op": "delete", "instance": car["id"]})
    b_now = client.get(f"/api/scenes/{b['scene_id']}").json()
    assert b_now["inst_raw"] == b["inst_raw"] and not b_now["can_undo"]
    assert client.get(f"/api/scenes/{a['scene_id']}/script").json()["edits"] == [{"op": "delete", "instance": car["id"]}]
    for _ in range(LIMITS.max_scenes):
        _new_scene(client)
    r = client.get(f"/api/scenes/{a['scene_id']}")
    assert r.status_code == 404 and "evicted" in r.json()["error"]


BAD_EDITS = [
    ({"op": "explode"}, "unknown op 'explode'"),
    ({"op": "paint", "class": 8, "rect": [0, 0, -1, -1]}, "is not inside the 32x64 map"),
    ({"op": "paint", "class": 7.9, "rect": [0, 0, 2, 2]}, "must be an integer, got 7.9"),
    ({"op": "paint", "class": "spaceship", "rect": [0, 0, 2, 2]}, "unknown class name 'spaceship'"),
    ({"op": "paint", "class": 99, "rect": [0, 0, 2, 2]}, r"class 99 is outside \[0, label_nc=35\)"),
    ({"op": "move", "instance": 7, "by": "left"}, "by .* must be two integers"),
    ({"op": "move", "instance": 424242, "by": [0, 1]}, "instance 424242 is not in the map"),
    ({"op": "set_feature", "instance": 7, "vector": [1, 2]}, "feature vector has 2 values; model.feat_num=3"),
    ({"op": "resize", "instance": "CAR", "scale": 1e9}, "scale 1e\\+09 must be in"),
    ({"op": "add_object", "class": "road", "rect": [0, 0, 2, 2], "bogus": 1}, r"unknown key\(s\) \['bogus'\]"),
    ({"op": "move", "instance": "CAR", "by": [10 ** 30, 0]}, "leaves no pixel of instance CAR"),
    # Stuff regions are not objects: deleting the road would leave a scene no label map looks like.
    ({"op": "delete", "instance": 7}, r"region 7 \(road\) is a stuff region, not an object instance: delete is for "
                                      "objects"),
    ({"op": "flip", "instance": 7}, "region 7 .road. is a stuff region.*flip is for objects"),
    ({"op": "resize", "instance": 7, "scale": 1.5}, "region 7 .road. is a stuff region.*resize is for objects"),
    ({"op": "move", "instance": 7, "by": [0, 3]}, "region 7 .road. is a stuff region.*move is for objects"),
    ({"op": "set_feature", "instance": 7, "vector": [1e300, 0, 0]}, "does not fit float32"),
    ({"op": "set_colour", "instance": 7, "rgb": [200, 30, 0]}, r"not anchored to colour \(loss.lambda_feature_colour=0\)"),
    ({"op": "paint", "class": 8, "brush": {"radius": 0.5, "points": [[0, 0], [31, 63]] * 9000}}, "brush stroke too large"),
]


@pytest.mark.parametrize("op, message", BAD_EDITS)
def test_bad_edits_are_400_with_a_clear_message(client, op, message):
    data = _new_scene(client)
    sid, car = data["scene_id"], _largest_object(data)["id"]
    if op.get("instance") == "CAR":  # an object of this scene
        op, message = {**op, "instance": car}, message.replace("CAR", str(car))
    body = _edit(client, sid, op, status=400)
    assert set(body) == {"error"}
    assert re.search(message, body["error"]), body["error"]
    assert not client.get(f"/api/scenes/{sid}").json()["can_undo"]  # nothing happened


def test_malformed_requests_are_4xx_and_the_server_keeps_serving(client):
    sid = _new_scene(client)["scene_id"]
    label, inst, _ = fh.scene(0)
    nan = b'{"op": "set_feature", "instance": 7, "vector": [NaN, 0, 0]}'
    rgb = _png(np.zeros((32, 64, 3), np.uint8))
    cases = [
        (client.post, f"/api/scenes/{sid}/edits", {"content": nan}, 400, "non-finite"),
        (client.post, f"/api/scenes/{sid}/edits", {"content": b"{not json"}, 400, "the body must be JSON"),
        (client.post, f"/api/scenes/{sid}/edits", {"json": [1, 2]}, 400, "an edit is a JSON object"),
        (client.post, f"/api/scenes/{sid}/edits", {"content": b"x" * (2 << 20)}, 413, "over the limit"),
        (client.post, "/api/scenes/nope/edits", {"json": {"op": "undo"}}, 404, "unknown scene id 'nope'"),
        (client.get, "/api/scenes/nope/script", {}, 404, "unknown scene id"),
        (client.post, f"/api/scenes/{sid}/undo", {}, 400, "nothing to undo"),
        (client.post, f"/api/scenes/{sid}/redo", {}, 400, "nothing to redo"),
        (client.get, f"/api/scenes/{sid}/swatches", {}, 400, "give the instance"),
        (client.get, f"/api/scenes/{sid}/swatches?instance=abc", {}, 400, "instance must be an integer"),
        (client.get, f"/api/scenes/{sid}/swatches?instance=5", {}, 400, "instance 5 is not in the scene"),
        (client.post, "/api/scenes", {"json": {"index": 10_000}}, 400, r"index 10000 is outside the test split \(0..99\)"),
        (client.post, "/api/scenes", {"json": {"index": "0"}}, 400, "index must be an integer"),
        (client.post, "/api/scenes", {"json": {"index": 0, "seed": 1.5}}, 400, "seed must be a non-negative integer"),
        (client.post, "/api/scenes", {"json": {"idx": 0}}, 400, "takes JSON"),
        (client.post, "/api/scenes", {"files": {"label": ("l.png", b"GIF89a" + b"\0" * 64, "image/gif")}}, 400,
         "label is not a PNG file"),
        (client.post, "/api/scenes", {"files": {"label": ("l.png", rgb, "image/png")}}, 400,
         "must be a single-channel PNG of ids"),
        (client.post, "/api/scenes", {"files": {"label": ("l.png", _png(np.zeros((32, 64), np.uint8) + 40), "image/png")}},
         400, "label holds class 40 >= label_nc=35"),
        (client.post, "/api/scenes", {"files": {"label": ("l.png", _png(label.astype(np.uint8)), "image/png"),
                                                "inst": ("i.png", _png(inst[:16].astype(np.uint16)), "image/png")}},
         400, "inst is 64x16 but label is 64x32"),
        (client.post, "/api/scenes", {"files": {"label": ("l.png", _png(label[:30].astype(np.uint8)), "image/png")}},
         400, "needs multiples of 4"),
        (client.post, "/api/scenes", {"files": {"label": ("l.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (80 << 10),
                                                          "image/png")}}, 413, "over the limit of 65536 bytes"),
        (client.post, "/api/scenes", {"files": {"inst": ("i.png", _png(inst.astype(np.uint16)), "image/png")}}, 400,
         "needs a `label` PNG"),
        (client.get, "/api/nothing-here", {}, 404, "Not Found"),
        (client.get, "/api/scenes", {}, 405, "Method Not Allowed"),
    ]
    for call, path, kwargs, status, message in cases:
        r = call(path, **kwargs)
        assert r.status_code == status, (path, kwargs.keys(), r.text)
        assert re.search(message, r.json()["error"]), (message, r.json())
    assert client.get(f"/api/scenes/{sid}").status_code == 200
    car = _largest_object(client.get(f"/api/scenes/{sid}").json())["id"]
    assert _edit(client, sid, {"op": "flip", "instance": car})["can_undo"]


def test_model_without_instance_features_hides_appearance(tmp_path):
    config = tiny_test.get_config()
    config.num_devices = 1
    synth = Synthesizer.from_workdir(fh.make_workdir(str(tmp_path / "plain"), config))
    with TestClient(make_app(synth)) as c:
        info = c.get("/api/info").json()
        assert not info["uses_features"] and info["clusters"] == {}
        data = _new_scene(c)
        assert all(row["cluster"] is None for row in data["instances"])
        car = _largest_object(data)
        _edit(c, data["scene_id"], {"op": "move", "instance": car["id"], "by": [0, 2]})
        _edit(c, data["scene_id"], {"op": "relabel", "instance": car["id"], "to": "bus"})
        err = _edit(c, data["scene_id"], {"op": "set_feature", "instance": 7, "cluster": 0}, status=400)
        assert "needs a model trained with instance features" in err["error"]
        err = _edit(c, data["scene_id"], {"op": "set_colour", "instance": 7, "rgb": [0, 0, 0]}, status=400)
        assert "set_colour needs a model trained with instance features" in err["error"]
        assert info["colour_features"] is False
        assert c.get(f"/api/scenes/{data['scene_id']}/swatches?instance=7").status_code == 400


def test_colour_anchored_model_takes_set_colour(tmp_path):
    synth = fh.synthesizer_with_bank(str(tmp_path / "colour"), fh.colour_config())
    with TestClient(make_app(synth, limits=LIMITS)) as c:
        assert c.get("/api/info").json()["colour_features"] is True
        data = _new_scene(c)
        sid, car = data["scene_id"], _largest_object(data)
        current = editing.feature_colour(synth.region_features(_decode(data["label_png"]), _inst(data),
                                                               seed=synth.config.features.sample_seed)[car["id"]][1])
        assert car["colour"] == current  # what the page's colour input starts from
        out = _edit(c, sid, {"op": "set_colour", "instance": car["id"], "rgb": [200, 30, 0]})
        row = {r["id"]: r for r in out["instances"]}[car["id"]]
        assert out["region"] == car["id"] and row["colour"] == [200, 30, 0] and row["cluster"] is None
        assert out["image_png"] != data["image_png"]
        bad = _edit(c, sid, {"op": "set_colour", "instance": car["id"], "rgb": [300, 0, 0]}, status=400)
        assert re.search(r"rgb must be three numbers in \[0, 255\], got \[300, 0, 0\]", bad["error"])
        assert c.get(f"/api/scenes/{sid}").json()["num_edits"] == 1  # the bad request changed nothing
        script = c.get(f"/api/scenes/{sid}/script").json()
        assert script["edits"] == [{"op": "set_colour", "instance": car["id"], "rgb": [200, 30, 0]}]
        undone = c.post(f"/api/scenes/{sid}/undo").json()
        np.testing.assert_array_equal(_decode(undone["image_png"]), _decode(data["image_png"]))


def test_cli_flags_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        editor_cli.main(["prog", "--help"])
    assert exit_.value.code == 0 and "--port" in capsys.readouterr().out
    assert editor_cli.main(["prog", f"--workdir={tmp_path / 'none'}"]) == 1
    assert "has no checkpoints/ folder" in capsys.readouterr().err
    no_bank = fh.make_workdir(str(tmp_path / "nobank"))
    assert editor_cli.main(["prog", f"--workdir={no_bank}"]) == 1
    assert "python -m pix2pixhd_jax.cli.encode_features" in capsys.readouterr().err
    assert editor_cli.main(["prog", f"--workdir={no_bank}", "--max_scenes=0"]) == 2


def test_deeply_nested_json_is_a_4xx_not_a_server_error(client):
    # 200 KB, under the JSON body limit: parsing it used to overflow the stack (HTTP 500 RecursionError).
    sid = _new_scene(client)["scene_id"]
    nested = b"[" * 100_000 + b"]" * 100_000
    parseable = b'{"op": "move", "instance": 7, "by": ' + b"[" * 500 + b"]" * 500 + b"}"  # parses, then recursed
    for path, body in ((f"/api/scenes/{sid}/edits", nested), ("/api/scenes", nested),
                       (f"/api/scenes/{sid}/local", nested), (f"/api/scenes/{sid}/edits", parseable)):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (path, r.text[:200])
        assert "nests arrays or objects too deeply" in r.json()["error"]
    assert not client.get(f"/api/scenes/{sid}").json()["can_undo"]


def test_loopback_host_headers_pass_the_host_check_and_others_do_not(synth):
    # What the CLI allows when it binds a loopback --host. IPv6 literals arrive bracketed, with an
    # optional port: --host=::1 used to answer every request 400 "Invalid host header".
    app = make_app(synth, limits=LIMITS, allowed_hosts=list(editor_cli.LOOPBACK))
    for header, status in (("[::1]:8000", 200), ("[::1]", 200), ("127.0.0.1:8000", 200), ("localhost", 200),
                           ("LOCALHOST:80", 200), ("evil.example:8000", 400), ("[::2]:8000", 400),
                           ("::1", 400), ("[::1", 400)):
        with TestClient(app, base_url="http://127.0.0.1") as c:
            r = c.get("/api/info", headers={"host": header})
        assert r.status_code == status, (header, r.text[:80])


def test_edit_count_and_history_steps_leave_out_undo_and_redo(client):
    data = _new_scene(client)
    sid, car = data["scene_id"], _largest_object(data)["id"]
    assert (data["edit_count"], data["steps"], data["step"]) == (0, ["opened the scene"], 0)
    _edit(client, sid, {"op": "move", "instance": car, "by": [0, 1]})
    _edit(client, sid, {"op": "flip", "instance": car})
    out = _edit(client, sid, {"op": "paint", "class": 8, "rect": [0, 0, 2, 2]})
    assert out["steps"] == ["opened the scene", f"move #{car} by [0, 1]", f"flip #{car}", "paint class 8"]
    client.post(f"/api/scenes/{sid}/undo")
    client.post(f"/api/scenes/{sid}/undo")
    out = client.post(f"/api/scenes/{sid}/redo").json()
    assert out["edit_count"] == 3 and out["num_edits"] == 6  # num_edits: the log, undo and redo included
    assert out["step"] == 2 and len(out["steps"]) == 4 and out["can_redo"]
    off = client.post(f"/api/scenes/{sid}/local", json={"local": False}).json()
    assert (off["edit_count"], off["step"], off["steps"]) == (3, 2, out["steps"])  # a setting is no step
    out = _edit(client, sid, {"op": "delete", "instance": car})  # a new edit drops the redo branch
    assert out["steps"][1:] == [f"move #{car} by [0, 1]", f"flip #{car}", f"delete #{car}"]
    assert out["step"] == 3 and not out["can_redo"] and out["edit_count"] == 4


def test_history_steps_follow_the_bounded_undo_depth(synth):
    with TestClient(make_app(synth, limits=Limits(max_history=2))) as c:
        data = _new_scene(c)
        sid, car = data["scene_id"], _largest_object(data)["id"]
        for dx in (1, 2, 3):
            out = _edit(c, sid, {"op": "move", "instance": car, "by": [0, dx]})
        assert out["steps"] == [f"move #{car} by [0, {dx}]" for dx in (1, 2, 3)] and out["step"] == 2
        out = c.post(f"/api/scenes/{sid}/undo").json()
        out = c.post(f"/api/scenes/{sid}/undo").json()
        assert out["step"] == 0 and not out["can_undo"] and len(out["steps"]) == 3


def test_swatches_yield_to_a_waiting_edit_and_resume_from_their_cache(client, synth):
    service = client.app.state.service
    data = _new_scene(client)
    sid, car = data["scene_id"], _largest_object(data)
    k = synth.bank.num_clusters(car["class"])
    service.edits_waiting += 1  # as while an edit request waits for the lock
    try:
        r = client.get(f"/api/scenes/{sid}/swatches", params={"instance": car["id"]})
    finally:
        service.edits_waiting -= 1
    assert r.status_code == 409 and "superseded by an edit" in r.json()["error"]
    first = client.get(f"/api/scenes/{sid}/swatches", params={"instance": car["id"]}).json()
    assert first["rendered"] == k and [s["cluster"] for s in first["swatches"]] == list(range(k))
    # Its own cluster does not change its swatches (each shows one cluster): served from the cache.
    _edit(client, sid, {"op": "set_feature", "instance": car["id"], "cluster": (car["cluster"] + 1) % k})
    again = client.get(f"/api/scenes/{sid}/swatches", params={"instance": car["id"]}).json()
    assert again["rendered"] == 0 and again["swatches"] == first["swatches"]
    service.edits_waiting += 1  # a panel already rendered is served even while an edit waits
    try:
        assert client.get(f"/api/scenes/{sid}/swatches", params={"instance": car["id"]}).json()["rendered"] == 0
    finally:
        service.edits_waiting -= 1
    _edit(client, sid, {"op": "move", "instance": car["id"], "by": [0, 2]})
    moved = client.get(f"/api/scenes/{sid}/swatches", params={"instance": car["id"]}).json()
    assert moved["rendered"] == k


@pytest.mark.parametrize("inst_of", ["label", "8-bit"])
def test_upload_without_object_ids_is_accepted_with_a_warning(client, inst_of):
    label = np.full((32, 64), 7, np.uint8)
    label[:, 40:] = 11
    label[10:20, 10:20] = 26
    inst = label.copy() if inst_of == "label" else np.where(label == 26, 200, label).astype(np.uint8)
    r = client.post("/api/scenes", files={"label": ("l.png", _png(label), "image/png"),
                                          "inst": ("i.png", _png(inst), "image/png")})
    assert r.status_code == 200, r.text
    (warning,) = r.json()["warnings"]
    expected = "equals the label map" if inst_of == "label" else "largest id 200 < 1000; an 8-bit PNG"
    assert expected in warning and "upload the 16-bit instance map" in warning
    good = np.where(label == 26, 26000, label.astype(np.uint16)).astype(np.uint16)
    r = client.post("/api/scenes", files={"label": ("l.png", _png(label), "image/png"),
                                          "inst": ("i.png", _png(good), "image/png")})
    assert r.json()["warnings"] == []


def test_polygon_and_flood_fill_regions(client):
    data = _new_scene(client)
    sid, inst = data["scene_id"], _inst(data)
    # A triangle: its inside and its outline take the class, nothing else changes.
    out = _edit(client, sid, {"op": "paint", "class": "sidewalk", "polygon": [[2, 2], [14, 8], [2, 20]]})
    painted = _decode(out["label_png"]) == 8
    expected = editing.ops.polygon_mask(inst.shape, [[2, 2], [14, 8], [2, 20]])
    assert painted[expected].all() and expected[8, 8] and not expected[14, 2] and not expected[2, 21]
    np.testing.assert_array_equal(_inst(out)[~expected], inst[~expected])
    # A flood fill from a pixel: the 4-connected part of the region under it, as a new object.
    before = _inst(out)
    filled = _edit(client, sid, {"op": "add_object", "class": "car", "fill": [5, 8]})
    region = editing.ops.fill_mask(before, [5, 8])
    new = filled["region"]
    assert new // 1000 == 26 and region[5, 8] and region.sum() < region.size
    np.testing.assert_array_equal(_inst(filled) == new, region)
    script = client.get(f"/api/scenes/{sid}/script").json()
    assert [e.get("polygon", e.get("fill")) for e in script["edits"]] == [[[2, 2], [14, 8], [2, 20]], [5, 8]]
    for bad, message in [({"polygon": [[0, 0], [1, 1]]}, "3..20000"), ({"fill": [0, 999]}, "fill point .* outside"),
                         ({"polygon": [[0, 0], [1, 1], [99, 0]]}, "polygon vertex .* outside")]:
        body = _edit(client, sid, {"op": "paint", "class": 8, **bad}, status=400)
        assert re.search(message, body["error"]), body["error"]


def test_the_command_serves_while_the_window_warm_up_runs_beside_it(synth, monkeypatch, capsys):
    import threading

    from pix2pixhd_jax.editing.session import EditSession

    events = []
    warm_up = EditSession.warm_up_windows

    def recorded_warm_up(self):
        events.append(("warm-up starts", threading.current_thread().name))
        return warm_up(self)

    def serve(app, **kwargs):  # instead of uvicorn.run: note the order, then wait for the warm-up
        events.append(("serving", threading.current_thread().name))
        for t in threading.enumerate():
            if t.name == "window-warm-up":
                t.join(300)

    monkeypatch.setattr(EditSession, "warm_up_windows", recorded_warm_up)
    monkeypatch.setattr(editor_cli.uvicorn, "run", serve)
    assert editor_cli.main(["prog", f"--workdir={synth.workdir}", "--port=0"]) == 0
    assert "compiled the generator for the test scenes" in capsys.readouterr().out
    assert ("warm-up starts", "window-warm-up") in events and ("serving", "MainThread") in events, events
