"""The interactive editor as an ASGI app (Starlette): a single page plus the JSON API it uses.

    app = make_app(Synthesizer.from_workdir("runs/feat"))   # serve with any ASGI server

The API (routes below in make_app; every error is a 4xx with {"error": "..."}; the page uses
nothing else) is documented once, for its users: README.md, "Interactive editor", "HTTP API".
The scene payload is EditorService.payload.

Local edits (Editor(local=True)) are on for new scenes unless `make_app(local=False)` or
the create request says "local": false: each edit's render is composited into the current image
around what it changed (config.editing margin and feather), so the rest of the image keeps its
pixels. /api/info reports the default as "local".

Scenes live in memory, keyed by unguessable ids (one per browser tab), least recently used first
out past `max_scenes`; undo depth is bounded by `max_history`. Request bodies are bounded
(`max_upload_bytes`, `max_json_bytes`) and every request is validated. Work runs in a thread pool
under one lock: the generator already uses every core, and a scene is never edited concurrently.
Swatches take the lock one cluster at a time and give up (409) as soon as an edit request has
arrived, so they never hold an edit back by more than one small window render.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any, AsyncIterator, Callable, Iterator, Optional

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pix2pixhd_jax import inputs
from pix2pixhd_jax.data import cityscapes as cs
from pix2pixhd_jax.editing import vocabulary
from pix2pixhd_jax.editing.options import EditorOptions
from pix2pixhd_jax.editing.scene import Scene
from pix2pixhd_jax.editing.server import codec
from pix2pixhd_jax.editing.vocabulary import Editor

log = logging.getLogger(__name__)

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
SWATCH_CACHE = 256  # swatch crops kept per scene (a few instances' panels)
SceneLoader = Callable[[int], tuple[np.ndarray, Optional[np.ndarray]]]


class ApiError(Exception):
    """A request the API refuses: HTTP status + a message for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclasses.dataclass
class Limits:
    max_scenes: int = 8  # scenes kept in memory (least recently used evicted)
    max_history: int = 32  # undo depth per scene
    max_upload_bytes: int = 8 << 20  # a multipart upload (label + inst PNGs)
    max_json_bytes: int = 1 << 20  # an edit (brush strokes are the largest)
    max_pixels: int = 2048 * 1024  # an uploaded map
    test_scenes: int = 100  # synthetic runs: how many test scenes the index picker offers


@dataclasses.dataclass
class OpenScene:
    """A scene the server holds for one browser tab: its editor, where it came from, encoding caches."""

    editor: Editor
    source: dict[str, Any]
    encoded: "OrderedDict[tuple[int, str], tuple[np.ndarray, str]]" = dataclasses.field(default_factory=OrderedDict)
    # Swatch crops by (SwatchPlan.key, cluster): a superseded request resumes where it stopped.
    swatch_crops: "OrderedDict[tuple, str]" = dataclasses.field(default_factory=OrderedDict)
    steps: list[str] = dataclasses.field(default_factory=lambda: ["opened the scene"])  # one per state
    step: int = 0  # the current state's index in steps
    geometry: Optional[tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]] = None

    def record_step(self, op: str, edit: dict[str, Any]) -> None:
        """Keep `steps` (what made each state of the history) in line with the editor after `op`."""
        if op == "undo":
            self.step -= 1
        elif op == "redo":
            self.step += 1
        elif op != "local":
            self.steps = self.steps[:self.step + 1] + [step_label(edit)]
            self.step += 1
        ed = self.editor
        drop = self.step - len(ed.history)  # states max_history dropped from the bottom of either stack
        if drop > 0:
            self.steps, self.step = self.steps[drop:], self.step - drop
        del self.steps[self.step + 1 + len(ed.future):]

    def instances(self, scene: Scene) -> list[dict[str, Any]]:
        """The instance table; its geometry is recomputed only when the maps changed."""
        if self.geometry is None:
            self.geometry = (scene.label, scene.inst, codec.instance_geometry(scene.label, scene.inst))
        elif self.geometry[0] is not scene.label or self.geometry[1] is not scene.inst:
            # An edit changes a few regions: the others keep their rows.
            old_label, old_inst, rows = self.geometry
            rows = (codec.updated_geometry(rows, old_label, old_inst, scene.label, scene.inst)
                    if old_label.shape == scene.label.shape else codec.instance_geometry(scene.label, scene.inst))
            self.geometry = (scene.label, scene.inst, rows)
        return codec.with_clusters(self.geometry[2], scene.clusters)

    def encode(self, array: np.ndarray, encoder: Callable[[np.ndarray], str]) -> str:
        """Encode `array` once: maps an edit leaves alone (and undo brings back) reuse their encoding.

        Scenes are immutable, so an array object stands for its content while it is alive (the
        cache holds it, so its id cannot be reused).
        """
        key = (id(array), encoder.__name__)
        hit = self.encoded.get(key)
        if hit is not None and hit[0] is array:
            self.encoded.move_to_end(key)
            return hit[1]
        data = encoder(array)
        self.encoded[key] = (array, data)
        while len(self.encoded) > 16:
            self.encoded.popitem(last=False)
        return data


class EditorService:
    """Scenes, their editors and the payloads the API returns; no HTTP here."""

    def __init__(self, synthesizer, *, load_scene: Optional[SceneLoader] = None, num_scenes: Optional[int] = None,
                 limits: Optional[Limits] = None, local: bool = True):
        m = synthesizer.options
        if not m.label_nc or m.label_nc > 256:
            raise ValueError(f"the editor edits class-id label maps (0 < label_nc <= 256); this model has "
                             f"label_nc={m.label_nc}")
        if m.label_feat:
            raise ValueError("the editor edits per instance; this model pools features per label region "
                             "(model.label_feat)")
        if synthesizer.uses_features and synthesizer.bank is None:
            raise ValueError(f"no feature bank for {synthesizer.workdir}: build it first with "
                             f"`python -m pix2pixhd_jax.cli.encode_features --workdir={synthesizer.workdir}`")
        self.synth, self.limits = synthesizer, limits or Limits()
        self.local = bool(local)  # local edits for scenes created without a "local" field
        self._load_scene, self._num_scenes = load_scene, num_scenes
        self.scenes: "OrderedDict[str, OpenScene]" = OrderedDict()
        self.lock = threading.Lock()
        self.edits_waiting = 0  # edit requests waiting for the lock: swatch rendering yields to them
        self._waiting_lock = threading.Lock()
        self._loader_lock = threading.Lock()

    # ------------------------------------------------------------------------------ facts
    def info(self) -> dict[str, Any]:
        m, bank = self.synth.options, self.synth.bank
        colours = cs.colour_table()
        things = set(EditorOptions.from_config(self.synth.config).thing_classes)
        classes = [{"id": c, "name": codec.class_name(c), "color": colours[c].tolist(), "thing": c in things}
                   for c in range(m.label_nc)]
        clusters = {str(c): bank.num_clusters(c) for c in range(m.label_nc)} if bank is not None else {}
        return {"classes": classes, "uses_features": bool(self.synth.uses_features), "clusters": clusters,
                "colour_features": bool(self.synth.colour_features),
                "test_scenes": self._scene_count(), "divisor": int(self.synth.divisor),
                "max_upload_bytes": self.limits.max_upload_bytes, "max_pixels": self.limits.max_pixels,
                "local": self.local}

    def _scene_count(self) -> Optional[int]:
        try:
            return self._test_split()[1]
        except (OSError, ValueError) as e:
            log.warning("the run's test split cannot be read: %s", e)
            return None

    def _test_split(self) -> tuple[SceneLoader, Optional[int]]:
        """(index -> maps, number of scenes): the loader given to make_app, else the run's test split (read once)."""
        with self._loader_lock:
            if self._load_scene is None:
                self._load_scene, self._num_scenes = inputs.label_maps(self.synth.config, self.limits.test_scenes)
            return self._load_scene, self._num_scenes

    # ------------------------------------------------------------------------------ scenes
    def create_from_index(self, index: Any, seed: Any = None, local: Any = None) -> dict[str, Any]:
        if isinstance(index, bool) or not isinstance(index, int):
            raise ApiError(400, f"index must be an integer, got {index!r}")
        try:
            loader, n = self._test_split()
        except (OSError, ValueError) as e:
            raise ApiError(400, f"the run's test split cannot be read ({e}); upload label/inst PNGs instead") from None
        if index < 0 or (n is not None and index >= n):
            raise ApiError(400, f"index {index} is outside the test split (0..{(n or 1) - 1})")
        try:
            label, inst = loader(index)
        except (OSError, ValueError, KeyError) as e:
            raise ApiError(400, f"cannot read test scene {index}: {e}") from None
        return self._create(label, inst, {"index": index}, seed, local)

    def create_from_upload(self, label_bytes: bytes, inst_bytes: Optional[bytes], seed: Any = None,
                           local: Any = None) -> dict[str, Any]:
        try:
            label, inst = codec.read_upload(label_bytes, inst_bytes, label_nc=self.synth.options.label_nc,
                                            max_pixels=self.limits.max_pixels)
        except codec.UploadError as e:
            raise ApiError(400, str(e)) from None
        warnings = codec.instance_warnings(label, inst) if inst_bytes is not None else []
        return {**self._create(label, inst, {"upload": True}, seed, local), "warnings": warnings}

    def _create(self, label: np.ndarray, inst: Optional[np.ndarray], source: dict[str, Any], seed: Any,
                local: Any) -> dict[str, Any]:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ApiError(400, f"seed must be a non-negative integer, got {seed!r}")
        if local is not None and not isinstance(local, bool):
            raise ApiError(400, f"local must be true or false, got {local!r}")
        start = time.perf_counter()
        with self.lock:
            try:
                editor = Editor(self.synth, label, inst, seed=seed, max_history=self.limits.max_history,
                                local=self.local if local is None else local, objects_only=True)
            except (ValueError, KeyError, IndexError) as e:
                raise ApiError(400, f"cannot edit this scene: {e.args[0] if e.args else e}") from None
            scene_id = secrets.token_urlsafe(12)
            opened = OpenScene(editor, source)
            self.scenes[scene_id] = opened
            while len(self.scenes) > self.limits.max_scenes:
                self.scenes.popitem(last=False)
            return self.payload(scene_id, opened, start, editor.initial_render_seconds)

    def scene(self, scene_id: str) -> OpenScene:
        opened = self.scenes.get(scene_id)
        if opened is None:
            raise ApiError(404, f"unknown scene id {scene_id!r} (never created, or evicted after "
                                f"{self.limits.max_scenes} newer scenes); load a scene again")
        self.scenes.move_to_end(scene_id)
        return opened

    def state(self, scene_id: str) -> dict[str, Any]:
        start = time.perf_counter()
        with self.lock:
            return self.payload(scene_id, self.scene(scene_id), start, render_seconds=0.0)

    def edit(self, scene_id: str, edit: Any) -> dict[str, Any]:
        start = time.perf_counter()
        with self._edit_turn():
            opened = self.scene(scene_id)
            try:
                result = opened.editor.apply_edit(edit)
            except ValueError as e:
                raise ApiError(400, str(e)) from None
            opened.record_step(edit["op"], edit)
            return {**self.payload(scene_id, opened, start, result.render_seconds), "region": result.region}

    @contextlib.contextmanager
    def edit_waiting(self) -> Iterator[None]:
        """Counts an edit as waiting while inside: swatch rendering stops at its next cluster meanwhile."""
        with self._waiting_lock:
            self.edits_waiting += 1
        try:
            yield
        finally:
            with self._waiting_lock:
                self.edits_waiting -= 1

    @contextlib.contextmanager
    def _edit_turn(self) -> Iterator[None]:
        """The lock, for an edit (counted as waiting until it has the lock)."""
        with self.edit_waiting():
            self.lock.acquire()
        try:
            yield
        finally:
            self.lock.release()

    def script(self, scene_id: str) -> dict[str, Any]:
        with self.lock:
            opened = self.scene(scene_id)
            return {**opened.editor.script(), "scene": opened.source}

    def swatches(self, scene_id: str, instance: Any) -> dict[str, Any]:
        """The instance rendered with each cluster of its class: crops of a window around it.

        Off the edit path: one cluster per turn of the lock, and a 409 as soon as an edit waits
        (the crops made so far are kept, per window content, so asking again resumes).
        """
        if not self.synth.uses_features:
            raise ApiError(400, "this model takes no appearance features, so it has no clusters to show")
        try:
            inst_id = int(instance)
        except (TypeError, ValueError):
            raise ApiError(400, f"instance must be an integer id, got {instance!r}") from None
        start = time.perf_counter()
        with self.lock:
            opened = self.scene(scene_id)
            try:
                plan = opened.editor.swatch_plan(inst_id)
            except ValueError as e:
                raise ApiError(400, str(e)) from None
        crops, rendered = opened.swatch_crops, 0
        for k in range(plan.num_clusters):
            if self.edits_waiting and (plan.key, k) not in crops:  # cached ones are served anyway
                raise ApiError(409, "swatches superseded by an edit; ask again once the edits are done")
            with self.lock:  # the cache too: an aborted request of the same tab may still be running
                if (plan.key, k) in crops:
                    crops.move_to_end((plan.key, k))
                    continue
                crops[(plan.key, k)] = codec.png_base64(opened.editor.render_swatch(plan, k))
                rendered += 1
                while len(crops) > SWATCH_CACHE:
                    crops.popitem(last=False)
        with self.lock:
            missing = [k for k in range(plan.num_clusters) if (plan.key, k) not in crops]
            if missing:  # evicted meanwhile by other swatches of this scene: rare, and asking again renders them
                raise ApiError(409, f"swatches of clusters {missing} were evicted while rendering; ask again")
            items = [{"cluster": k, "png": crops[(plan.key, k)]} for k in range(plan.num_clusters)]
        return {"instance": inst_id, "class": plan.class_id, "current": plan.current, "swatches": items,
                "rendered": rendered, "render_ms": round((time.perf_counter() - start) * 1e3, 1)}

    def payload(self, scene_id: str, opened: OpenScene, start: float, render_seconds: float) -> dict[str, Any]:
        """The scene response; render_seconds is the generator time this request spent (0: none)."""
        editor = opened.editor
        scene = editor.scene
        h, w = scene.label.shape
        instances = opened.instances(scene)
        if self.synth.colour_features:  # what the page's colour input starts from
            instances = [{**row, "colour": editor.colour_shown(scene.features[row["id"]])} for row in instances]
        out = {
            "scene_id": scene_id, "height": h, "width": w,
            "instances": instances,
            "image_png": opened.encode(editor.image, codec.image_png),
            "label_png": opened.encode(scene.label, codec.label_png),
            "inst_png": opened.encode(scene.inst, codec.inst_png),
            "inst_raw": opened.encode(scene.inst, codec.raw_base64),
            "render_ms": round(render_seconds * 1e3, 1),
            "can_undo": bool(editor.history), "can_redo": bool(editor.future), "num_edits": len(editor.log),
            "edit_count": sum(e["op"] not in vocabulary.HISTORY_OPS for e in editor.log),
            "steps": opened.steps, "step": opened.step,
            "source": opened.source, "local": editor.local,
        }
        out["server_ms"] = round((time.perf_counter() - start) * 1e3, 1)
        return out


# ----------------------------------------------------------------------------- HTTP


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {int(declared)} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_body(request: Request, limit: int) -> Any:
    body = await _read_body(request, limit)
    try:
        return vocabulary.parse_json(body, "the body")
    except ValueError as e:
        raise ApiError(400, str(e)) from None


async def _form(request: Request, body: bytes) -> dict[str, Any]:
    async def stream() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=4, max_fields=8,
                                     max_part_size=1 << 16).parse()
    except MultiPartException as e:
        raise ApiError(400, f"malformed multipart form: {e.message}") from None
    out = {}
    for key, value in form.multi_items():
        out[key] = (await value.read()) if isinstance(value, UploadFile) else value
    return out


def make_app(synthesizer, *, load_scene: Optional[SceneLoader] = None, num_scenes: Optional[int] = None,
             limits: Optional[Limits] = None, allowed_hosts: Optional[list[str]] = None,
             local: bool = True) -> Starlette:
    """The editor for one Synthesizer. load_scene(index) -> (label, inst) overrides the run's test split.

    local: whether new scenes start with local edits (a scene's create request may say otherwise).

    allowed_hosts: Host header names accepted, any port (the CLI passes the loopback names when it
    binds a loopback address, so pages of other sites cannot reach the editor through DNS
    rebinding); IPv6 literals may be given bare ("::1"): they are matched bracketed ("[::1]:8000").
    """
    service = EditorService(synthesizer, load_scene=load_scene, num_scenes=num_scenes, limits=limits, local=local)
    lim = service.limits

    async def page(request: Request) -> Response:
        return FileResponse(os.path.join(STATIC_DIR, "index.html"))

    async def info(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(service.info))

    async def create_scene(request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await _form(request, await _read_body(request, lim.max_upload_bytes))
            label = form.get("label")
            if not isinstance(label, bytes):
                raise ApiError(400, "the form needs a `label` PNG file (and optionally an `inst` PNG file)")
            inst = form.get("inst")
            if inst is not None and not isinstance(inst, bytes):
                raise ApiError(400, "`inst` must be a PNG file")
            seed = form.get("seed")
            seed = None if seed in (None, "") else _int_field(seed, "seed")
            local = form.get("local")
            local = None if local in (None, "") else _bool_field(local, "local")
            return JSONResponse(await run_in_threadpool(service.create_from_upload, label, inst, seed, local))
        body = await _json_body(request, lim.max_json_bytes)
        if not isinstance(body, dict) or "index" not in body or set(body) - {"index", "seed", "local"}:
            raise ApiError(400, 'POST /api/scenes takes JSON {"index": i, "seed": s (optional), "local": b '
                                "(optional)} or a multipart form with `label` and `inst` PNG files")
        return JSONResponse(await run_in_threadpool(service.create_from_index, body["index"], body.get("seed"),
                                                    body.get("local")))

    async def get_scene(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(service.state, request.path_params["scene_id"]))

    async def edit(request: Request) -> Response:
        with service.edit_waiting():  # from its arrival: a swatch render starting now would delay it
            body = await _json_body(request, lim.max_json_bytes)
            if not isinstance(body, dict):
                raise ApiError(400, 'an edit is a JSON object, e.g. {"op": "move", "instance": 26001, "by": [0, 12]}')
            return JSONResponse(await run_in_threadpool(service.edit, request.path_params["scene_id"], body))

    async def set_local(request: Request) -> Response:
        body = await _json_body(request, lim.max_json_bytes)
        if not isinstance(body, dict) or set(body) != {"local"} or not isinstance(body["local"], bool):
            raise ApiError(400, 'POST /api/scenes/{scene_id}/local takes JSON {"local": true} or {"local": false}')
        return JSONResponse(await run_in_threadpool(service.edit, request.path_params["scene_id"],
                                                    {"op": "local", "on": body["local"]}))

    def history_op(op: str):
        async def endpoint(request: Request) -> Response:
            return JSONResponse(await run_in_threadpool(service.edit, request.path_params["scene_id"], {"op": op}))
        return endpoint

    async def script(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(service.script, request.path_params["scene_id"]))

    async def swatches(request: Request) -> Response:
        instance = request.query_params.get("instance")
        if instance is None:
            raise ApiError(400, "give the instance: /swatches?instance=26001")
        return JSONResponse(await run_in_threadpool(service.swatches, request.path_params["scene_id"], instance))

    async def api_error(request: Request, exc: ApiError) -> Response:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("editor request %s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}: {exc}); the server keeps running"},
                            status_code=500)

    routes = [
        Route("/", page),
        Route("/api/info", info),
        Route("/api/scenes", create_scene, methods=["POST"]),
        Route("/api/scenes/{scene_id}", get_scene),
        Route("/api/scenes/{scene_id}/edits", edit, methods=["POST"]),
        Route("/api/scenes/{scene_id}/undo", history_op("undo"), methods=["POST"]),
        Route("/api/scenes/{scene_id}/redo", history_op("redo"), methods=["POST"]),
        Route("/api/scenes/{scene_id}/local", set_local, methods=["POST"]),
        Route("/api/scenes/{scene_id}/script", script),
        Route("/api/scenes/{scene_id}/swatches", swatches),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    middleware = ([Middleware(TrustedHostMiddleware, allowed_hosts=[host_pattern(h) for h in allowed_hosts])]
                  if allowed_hosts else [])
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: server_error})
    app.state.service = service
    return app


def step_label(edit: dict[str, Any]) -> str:
    """A short line for the history list: the op and what it acted on ("move #26001 by [0, 3]")."""
    op = str(edit.get("op"))
    if op == "reset":
        return "reset to the opened scene"
    parts = [op]
    for key in ("instance", "src", "class", "to", "by", "scale", "cluster", "rgb"):
        if key in edit:
            value = edit[key]
            parts.append(f"#{value}" if key in ("instance", "src") and isinstance(value, int) else f"{key} {value}")
    return " ".join(parts)[:80]


def host_pattern(host: str) -> str:
    """An allowed Host header name: IPv6 literals bracketed ("::1" -> "[::1]"), as clients send them."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _int_field(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"{what} must be an integer, got {value!r}") from None


def _bool_field(value: Any, what: str) -> bool:
    """A form field as a bool: 'true' / '1' or 'false' / '0'."""
    text = str(value).strip().lower()
    if text not in ("true", "1", "false", "0"):
        raise ApiError(400, f"{what} must be true or false, got {value!r}")
    return text in ("true", "1")
