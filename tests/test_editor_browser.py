"""The editor page in a real headless Chromium on a real uvicorn server: click, drag, recolour, undo.

Needs Debian's `chromium` (.ci/run installs it) and the `playwright` client from PyPI, which drives
that binary (no browser download). Skipped, with the reason, when no chromium binary is found.

PIX2PIXHD_EDITOR_WORKDIR=runs/feat runs it on a trained workdir (with its feature bank) instead of
the tiny initialised model, and PIX2PIXHD_EDITOR_SCREENSHOT=path keeps the screenshot there (the
README's picture is made that way).
"""
import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest
import uvicorn
from PIL import Image
from scipy import ndimage

import feature_helpers as fh
from pix2pixhd_jax.configs import default
from pix2pixhd_jax.editing.server.app import make_app
from pix2pixhd_jax.inference import Synthesizer

pytestmark = pytest.mark.slow

CHROMIUM = next((p for p in (os.environ.get("PIX2PIXHD_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p and os.path.exists(p)), None)
WAIT_MS = 60_000


def _serve(workdir: str):
    """The editor of `workdir` on a uvicorn thread: yields its URL, stops it after.

    The defaults complete a config saved by an older version, as the editor command does.
    """
    synth = Synthesizer.from_workdir(workdir, defaults=default.get_config())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(make_app(synth), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = os.environ.get("PIX2PIXHD_EDITOR_WORKDIR")
    if not workdir:
        workdir = fh.workdir_with_bank(str(tmp_path_factory.mktemp("editor_browser") / "w"))
    yield from _serve(workdir)


@pytest.fixture(scope="module")
def colour_server(tmp_path_factory):
    yield from _serve(fh.workdir_with_bank(str(tmp_path_factory.mktemp("editor_browser_colour") / "w"),
                                           fh.colour_config()))


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium binary found (Debian: apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright client is in the test extra")
    with sync_api.sync_playwright() as p:
        # Root in a container: Chromium's sandbox needs user namespaces it does not get there.
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


# Statuses the browser logs as console errors although the page expects them: 409, swatches that
# yielded to an edit (the page asks again).
EXPECTED_STATUSES = (409,)


def _open(browser, url: str, width: int = 1400, height: int = 780, expected: tuple[int, ...] = EXPECTED_STATUSES):
    """A page on `url` once its first scene is shown; fails on any console error after the test."""
    page = browser.new_page(viewport={"width": width, "height": height})
    problems = []
    allowed = tuple(f"the server responded with a status of {s} " for s in expected)
    page.on("console", lambda m: problems.append(m.text)
            if m.type == "error" and not any(a in m.text for a in allowed) else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(url)
    _wait_version(page, 1)
    yield page
    assert not problems, problems
    page.close()


@pytest.fixture()
def page(browser, server):
    yield from _open(browser, server)


@pytest.fixture()
def colour_page(browser, colour_server):
    yield from _open(browser, colour_server)


def _wait_version(page, version: int) -> None:
    page.wait_for_function(f"window.editor && window.editor.version >= {version} && !window.editor.busy",
                           timeout=WAIT_MS)


def _state(page) -> dict:
    s = page.evaluate("""() => ({inst: Array.from(editor.inst), h: editor.state.height, w: editor.state.width,
        image: editor.state.image_png, version: editor.version, rows: editor.state.instances,
        selected: editor.selected})""")
    s["inst"] = np.asarray(s["inst"], np.int64).reshape(s["h"], s["w"])
    s["clusters"] = {r["id"]: r["cluster"] for r in s["rows"]}
    return s


def _screen(page, y: float, x: float, state: dict) -> tuple[float, float]:
    box = page.locator("#label-canvas").bounding_box()
    return box["x"] + (x + 0.5) * box["width"] / state["w"], box["y"] + (y + 0.5) * box["height"] / state["h"]


def _interior_pixel(mask: np.ndarray) -> tuple[int, int]:
    """The object pixel nearest its centroid (inside even for concave shapes)."""
    ys, xs = np.nonzero(mask)
    i = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    return int(ys[i]), int(xs[i])


def test_click_drag_recolour_and_undo(page, tmp_path):
    before = _state(page)
    obj = max((r for r in before["rows"] if r["id"] >= 1000 and r["cluster"] is not None), key=lambda r: r["area"])
    oid, mask = obj["id"], before["inst"] == obj["id"]
    y, x = _interior_pixel(mask)
    d = max(2, before["w"] // 16)
    dx = d if obj["bbox"][3] + d <= before["w"] else -d

    # Click selects; dragging the selected object moves it.
    page.mouse.move(*_screen(page, y, x, before))
    page.mouse.down()
    for step in range(1, 5):
        page.mouse.move(*_screen(page, y, x + dx * step / 4, before))
    page.mouse.up()
    _wait_version(page, before["version"] + 1)
    moved = _state(page)
    assert page.text_content("#sel-id") == f"#{oid}" and moved["selected"] == oid
    # The colour input only for models whose features are colours (not the tiny default model).
    assert page.is_visible("#colour") == page.evaluate("editor.info.colour_features")
    expected = np.zeros_like(mask)
    expected[:, max(0, dx):mask.shape[1] + min(0, dx)] = mask[:, max(0, -dx):mask.shape[1] - max(0, dx)]
    np.testing.assert_array_equal(moved["inst"] == oid, expected)
    assert moved["image"] != before["image"] and moved["clusters"][oid] == obj["cluster"]

    # Another cluster from the swatches: same maps, another image.
    page.wait_for_selector(f"#swatches[data-instance='{oid}'] button", timeout=WAIT_MS)
    other = next(b for b in page.query_selector_all("#swatches button")
                 if int(b.get_attribute("data-cluster")) != obj["cluster"])
    chosen = int(other.get_attribute("data-cluster"))
    other.click()
    _wait_version(page, moved["version"] + 1)
    recoloured = _state(page)
    assert recoloured["clusters"][oid] == chosen
    np.testing.assert_array_equal(recoloured["inst"], moved["inst"])
    assert recoloured["image"] != moved["image"]
    shot = os.environ.get("PIX2PIXHD_EDITOR_SCREENSHOT") or str(tmp_path / "editor.png")
    page.screenshot(path=shot)
    assert os.path.getsize(shot) > 10_000

    # Undo twice: the exact maps and image of each earlier step.
    page.click("#undo")
    _wait_version(page, recoloured["version"] + 1)
    undone = _state(page)
    np.testing.assert_array_equal(undone["inst"], moved["inst"])
    assert undone["image"] == moved["image"] and undone["clusters"][oid] == obj["cluster"]
    page.click("#undo")
    _wait_version(page, undone["version"] + 1)
    first = _state(page)
    np.testing.assert_array_equal(first["inst"], before["inst"])
    assert first["image"] == before["image"] and page.is_disabled("#undo")
    page.click("#redo")
    _wait_version(page, first["version"] + 1)
    np.testing.assert_array_equal(_state(page)["inst"], moved["inst"])


def test_add_an_object_then_delete_it_with_the_keyboard(page):
    before = _state(page)
    h, w = before["h"], before["w"]
    page.check("input[value=add-rect]")
    page.click("#palette button[data-class-id='26']")
    y0, x0, y1, x1 = h // 4, w // 4, h // 4 + max(3, h // 8), w // 4 + max(4, w // 8)
    page.mouse.move(*_screen(page, y0, x0, before))
    page.mouse.down()
    page.mouse.move(*_screen(page, (y0 + y1) / 2, (x0 + x1) / 2, before))
    page.mouse.move(*_screen(page, y1 - 1, x1 - 1, before))
    page.mouse.up()
    _wait_version(page, before["version"] + 1)
    added = _state(page)
    new = added["selected"]
    assert new // 1000 == 26 and new not in before["clusters"]
    np.testing.assert_array_equal(np.argwhere(added["inst"] == new)[[0, -1]], [[y0, x0], [y1 - 1, x1 - 1]])
    page.check("input[value=select]")
    page.keyboard.press("Delete")
    _wait_version(page, added["version"] + 1)
    assert new not in _state(page)["clusters"]
    assert page.text_content("#error") == ""


def test_local_edits_checkbox_is_on_and_reaches_the_server(page):
    assert page.is_visible("#local") and page.is_checked("#local")
    assert "Local edits" in page.text_content("#rendering")
    before = _state(page)
    server = "() => fetch(`/api/scenes/${editor.state.scene_id}`).then((r) => r.json()).then((d) => d.local)"
    assert page.evaluate(server) is True
    page.uncheck("#local")
    _wait_version(page, before["version"] + 1)
    assert page.evaluate(server) is False and not page.is_checked("#local")
    page.check("#local")
    _wait_version(page, before["version"] + 2)
    assert page.evaluate(server) is True


def test_colour_input_of_a_colour_anchored_model_reaches_the_server(colour_page):
    page = colour_page
    before = _state(page)
    obj = max((r for r in before["rows"] if r["id"] >= 1000), key=lambda r: r["area"])
    assert not page.is_visible("#colour")  # nothing selected yet
    page.mouse.click(*_screen(page, *_interior_pixel(before["inst"] == obj["id"]), before))
    page.wait_for_selector("#colour", state="visible", timeout=WAIT_MS)
    assert page.input_value("#colour") == "#%02x%02x%02x" % tuple(obj["colour"])  # preset: its current colour
    page.fill("#colour", "#c81e00")
    _wait_version(page, before["version"] + 1)
    after = _state(page)
    row = next(r for r in after["rows"] if r["id"] == obj["id"])
    assert row["colour"] == [200, 30, 0] and after["image"] != before["image"]
    script = page.evaluate("() => fetch(`/api/scenes/${editor.state.scene_id}/script`).then((r) => r.json())")
    assert script["edits"] == [{"op": "set_colour", "instance": obj["id"], "rgb": [200, 30, 0]}]
    assert page.input_value("#colour") == "#c81e00" and page.text_content("#error") == ""


def _in_viewport(page, selector: str) -> bool:
    box, view = page.locator(selector).bounding_box(), page.viewport_size
    return (box is not None and box["width"] > 0 and box["x"] >= 0 and box["y"] >= 0
            and box["x"] + box["width"] <= view["width"] and box["y"] + box["height"] <= view["height"])


def _png_file(path, array) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def _shot(page, tmp_path, name: str) -> None:
    """Keeps a screenshot (PIX2PIXHD_EDITOR_SHOTS=dir keeps them there, to look at the layout)."""
    folder = os.environ.get("PIX2PIXHD_EDITOR_SHOTS") or str(tmp_path)
    page.screenshot(path=os.path.join(folder, name))


@pytest.mark.parametrize("size", ["1400x800", "800x600"])
def test_errors_warnings_and_both_views_are_in_the_viewport(browser, server, tmp_path, size):
    width, height = (int(v) for v in size.split("x"))
    for page in _open(browser, server, width, height, EXPECTED_STATUSES + (400,)):  # the bad upload
        before = _state(page)
        assert _in_viewport(page, "#label-canvas") and _in_viewport(page, "#image")  # stacked or side by side
        # With an object selected (the sidebar at its longest), a bad upload's error is in view.
        obj = max((r for r in before["rows"] if r["id"] >= 1000), key=lambda r: r["area"])
        page.mouse.click(*_screen(page, *_interior_pixel(before["inst"] == obj["id"]), before))
        not_png = {"name": "l.png", "mimeType": "image/png", "buffer": b"not a png"}
        page.set_input_files("#upload-label", files=[not_png])
        page.click("#load-upload button")
        page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=WAIT_MS)
        assert "is not a PNG file" in page.text_content("#error") and _in_viewport(page, "#error")
        _shot(page, tmp_path, f"error_{size}.png")
        # An instance map without object ids (here: the label map itself) loads, with a warning in view.
        label = np.full((before["h"], before["w"]), 7, np.uint8)
        label[:, before["w"] // 2:] = 11
        label[2:8, 4:12] = 26
        page.set_input_files("#upload-label", _png_file(tmp_path / "label.png", label))
        page.set_input_files("#upload-inst", _png_file(tmp_path / "inst.png", label))
        page.click("#load-upload button")
        _wait_version(page, before["version"] + 1)
        assert "equals the label map" in page.text_content("#warning") and _in_viewport(page, "#warning")
        assert page.text_content("#error") == ""
        assert _in_viewport(page, "#label-canvas") and _in_viewport(page, "#image")
        _shot(page, tmp_path, f"warning_{size}.png")


def test_keyboard_acts_on_the_scene_and_stuff_is_not_an_object(page):
    # Type a scene number and press Enter: focus is in the text field. A click gives it to the canvas.
    page.fill("#scene-index", "0")
    page.press("#scene-index", "Enter")
    _wait_version(page, 2)
    before = _state(page)
    obj = max((r for r in before["rows"] if r["id"] >= 1000), key=lambda r: r["area"])
    oid, mask = obj["id"], before["inst"] == obj["id"]
    page.mouse.click(*_screen(page, *_interior_pixel(mask), before))
    assert page.evaluate("document.activeElement.id") == "label-canvas"
    page.keyboard.press("Delete")
    _wait_version(page, before["version"] + 1)
    assert not (_state(page)["inst"] == oid).any()
    page.keyboard.press("Control+z")  # the scene's undo, not the text field's
    _wait_version(page, before["version"] + 2)
    np.testing.assert_array_equal(_state(page)["inst"], before["inst"])
    assert page.input_value("#scene-index") == "0"
    page.mouse.click(*_screen(page, *_interior_pixel(mask), before))
    page.keyboard.press("ArrowRight")
    _wait_version(page, before["version"] + 3)
    ys, xs = np.nonzero(mask)
    keep = xs + 1 < before["w"]
    assert (_state(page)["inst"][ys[keep], xs[keep] + 1] == oid).all()
    page.keyboard.press("Shift+ArrowLeft")
    _wait_version(page, before["version"] + 4)
    page.keyboard.press("f")
    _wait_version(page, before["version"] + 5)
    features = page.evaluate("editor.info.uses_features")
    if features:
        page.keyboard.press("2")
        _wait_version(page, before["version"] + 6)
        assert _state(page)["clusters"][oid] == 1
    # The counter counts edits, not undo; the history list jumps back to the opened scene.
    now = _state(page)
    count = 4 + int(features)
    assert page.text_content("#edit-count") == f"{count} edits"
    assert page.locator("#history li").count() == count  # the opened scene + the edits after the undone delete
    page.click("#history li >> nth=0")
    _wait_version(page, now["version"] + 1)
    np.testing.assert_array_equal(_state(page)["inst"], before["inst"])
    assert page.evaluate("editor.state.step") == 0 and page.locator("#history li.future").count() == count - 1
    page.click("#history li >> nth=-1")
    _wait_version(page, now["version"] + 2)
    np.testing.assert_array_equal(_state(page)["inst"], now["inst"])

    # Text fields keep their keys: typing "fence" in the class search flips nothing, it filters.
    page.type("#class-search", "fence")
    assert [b.get_attribute("data-class-id") for b in page.query_selector_all("#palette button:visible")] == ["13"]
    assert page.text_content("#palette button[data-class-id='26']").strip() == "car"
    assert _state(page)["version"] == now["version"] + 2

    # A stuff region: the object actions are disabled with the reason; Delete says why, nothing changes.
    road = _interior_pixel(now["inst"] == 7)
    page.mouse.click(*_screen(page, *road, now))
    assert page.is_disabled("#delete") and "stuff region" in page.get_attribute("#object-actions", "title")
    page.keyboard.press("Delete")
    assert "road (region 7) is a stuff region" in page.text_content("#error")
    assert (_state(page)["inst"] == 7).any() and _state(page)["version"] == now["version"] + 2
    page.keyboard.press("Escape")
    assert page.text_content("#sel-id") == "none"


def test_swatches_aborted_while_their_body_arrives_are_asked_again_not_shown_as_an_error(page):
    # An edit aborts the swatch request; when the abort lands after the headers, during the body
    # read, it must still count as an abort (asked again once the edit is done), never as a failure.
    before = _state(page)
    obj = max((r for r in before["rows"] if r["id"] >= 1000 and r["cluster"] is not None), key=lambda r: r["area"])
    page.evaluate("""() => {
        const realFetch = window.fetch;
        window.stalledSwatches = 0;
        window.fetch = (path, options) => {
            if (!String(path).includes("/swatches") || window.stalledSwatches) return realFetch(path, options);
            window.stalledSwatches += 1;  // headers arrived; the body never does until the abort
            const body = new Promise((_, reject) => options.signal.addEventListener(
                "abort", () => reject(new DOMException("aborted", "AbortError"))));
            return Promise.resolve({ok: true, status: 200, json: () => body});
        };
    }""")
    errors = page.evaluate("editor.errors")
    page.mouse.click(*_screen(page, *_interior_pixel(before["inst"] == obj["id"]), before))
    page.wait_for_function("window.stalledSwatches === 1", timeout=WAIT_MS)
    page.keyboard.press("f")
    _wait_version(page, before["version"] + 1)
    page.wait_for_function(f"document.querySelector(\"#swatches[data-instance='{obj['id']}'] button\") "
                           f"|| editor.errors > {errors}", timeout=WAIT_MS)
    assert page.evaluate("editor.errors") == errors, page.text_content("#error")
    assert page.locator("#swatches button").count() == page.evaluate(
        f"editor.info.clusters[String({obj['class']})]")


def test_an_edit_right_after_selecting_goes_first_then_swatches_and_zoom(page):
    before = _state(page)
    obj = max((r for r in before["rows"] if r["id"] >= 1000 and r["cluster"] is not None), key=lambda r: r["area"])
    oid = obj["id"]
    # Flip right after selecting: the flip is sent first, the swatches follow once it is done.
    page.mouse.click(*_screen(page, *_interior_pixel(before["inst"] == oid), before))
    page.keyboard.press("f")
    _wait_version(page, before["version"] + 1)
    page.wait_for_selector(f"#swatches[data-instance='{oid}'] button", timeout=WAIT_MS)
    assert page.text_content("#error") == ""
    flipped = _state(page)
    # Zoom in over the object: the pixel under the cursor stays there, and clicks still map to pixels.
    y, x = _interior_pixel(flipped["inst"] == oid)
    sx, sy = _screen(page, y, x, flipped)
    page.mouse.move(sx, sy)
    page.mouse.wheel(0, -600)
    page.wait_for_function("editor.view.zoom > 2", timeout=WAIT_MS)
    box = page.locator("#label-canvas").bounding_box()
    assert box["width"] > 2 * page.locator("#label-stage").bounding_box()["width"]
    zx, zy = _screen(page, y, x, flipped)
    assert abs(zx - sx) <= box["width"] / flipped["w"] and abs(zy - sy) <= box["height"] / flipped["h"]
    page.keyboard.press("Escape")
    page.mouse.click(zx, zy)
    assert page.evaluate("editor.selected") == oid
    assert page.text_content("#legend").startswith(obj["class_name"])
    # Alt+drag pans both views; a click still lands on the pixel under it.
    pan = page.evaluate("editor.view.panX")
    page.keyboard.down("Alt")
    page.mouse.move(zx, zy)
    page.mouse.down()
    page.mouse.move(zx + 12, zy, steps=3)
    page.mouse.up()
    page.keyboard.up("Alt")
    assert page.evaluate("editor.view.panX") != pan and page.evaluate("editor.selected") == oid
    assert page.evaluate("document.getElementById('image').style.left") == page.evaluate(
        "document.getElementById('label-canvas').style.left")
    page.keyboard.press("Escape")
    page.mouse.click(*_screen(page, y, x, flipped))
    assert page.evaluate("editor.selected") == oid

    # Polygon (clicks, Enter closes) and flood fill tools, at 1:1 again.
    page.click("#zoom-reset")
    page.check("input[value=paint-polygon]")
    page.click("#palette button[data-class-id='8']")
    now = _state(page)
    h, w = now["h"], now["w"]
    corners = [(1, 1), (1, w // 3), (h // 3, w // 3), (h // 3, 1)]
    for y, x in corners:
        page.mouse.click(*_screen(page, y, x, now))
    page.keyboard.press("Enter")
    _wait_version(page, now["version"] + 1)
    painted = _state(page)
    assert (painted["inst"][1:h // 3 + 1, 1:w // 3 + 1] == 8).all()
    assert (painted["inst"][h // 3 + 2:] == now["inst"][h // 3 + 2:]).all()
    page.check("input[value=paint-fill]")
    page.click("#palette button[data-class-id='22']")
    road = _interior_pixel(painted["inst"] == 7)
    parts, _ = ndimage.label(painted["inst"] == 7)
    page.mouse.click(*_screen(page, *road, painted))
    _wait_version(page, painted["version"] + 1)
    filled = _state(page)["inst"]
    np.testing.assert_array_equal(filled == 22, (parts == parts[road]) | (painted["inst"] == 22))
    assert page.text_content("#error") == ""
