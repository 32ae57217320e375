"""Editor latency: edits on the warm editor server, local (a window render) and full, vs the bare generator.

  python -m benchmarks.editor_latency                                       # initialised model of --config
  python -m benchmarks.editor_latency --workdir=runs/feat                   # a trained run (its feature bank)
  python -m benchmarks.editor_latency --sizes=1024x512,2048x1024 --select_rounds=0 --out=benchmarks/results
  python -m benchmarks.editor_latency --rounds=0 --select_rounds=0 --error_sizes=256x128,1024x512 --workdir=runs/feat

Without --workdir, the generator of --config (default configs/synthetic_features.py, the README's
editor workflow) is initialised with random weights and a random 10-cluster feature bank: latency
does not depend on training. The editor runs as its real command (`python -m
pix2pixhd_jax.cli.editor`) in a subprocess; this process loads the same checkpoint.

For each size, the scene (a synthetic street at that size) is uploaded twice as label/instance PNGs,
once with local edits on (each edit renders a window: editing/window.py) and once with them off
(each edit renders the whole image); a few warm-up rounds compile and settle everything, then
--rounds rounds each time, one after the other (so machine load hits all alike):
  local    POST /api/scenes/{id}/edits on the local scene: a move of the largest car by +-2 px,
           timed by the client from request to parsed JSON (the HTTP round trip, the edit, the
           window render, compositing, PNG/base64 encoding and JSON)
  full     the same move on the scene with local edits off (a full render)
  forward  synth.synthesize on the maps of the full scene with the feature map precomputed,
           timed until the image is on the host
Reported: medians, the server's render time, and the 1-minute load average before and after.

Then --select_rounds rounds of "the first edit after selecting a new object" (issue 25's goal:
<= 1.2x a plain edit): on a freshly uploaded scene (so no swatch is cached), a plain edit (a move
of the largest car) is timed; then the page's selection is played: its swatches are asked for on a
second connection, and a delay later (while they render; --select_delays_ms, cycled: a key pressed
right away, or while the user looks at the object) the next edit (the move back) is sent and timed.
The server renders swatches one cluster per turn of its lock and stops as soon as an edit waits
(409), so the edit waits for one cluster's render at most. Reported: medians of both, their ratio,
the same per delay, how many swatch requests yielded, and an uncached full swatch panel's time for
scale.

--error_sizes measures, in this process, how far a local edit's window render is from a full render
of the edited scene over the pixels the edit composites (mean, max and 99th percentile of the
absolute difference in 0-255 levels) for a move, a cluster change, a relabel (car -> truck) and a
delete of the largest car, at --window_context_px (default: the config's).

--warmup_sizes times, in this process, the editor command's warm-up for a synthetic street of each
size: the first full render, then the window renders of in-place edits of its objects (how many
window shapes, how long).

With --out, the rows also go to <out>/editor_latency.json and .md.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Optional, Sequence

from pix2pixhd_jax.cli import process

import httpx
import jax
import numpy as np
from PIL import Image

from benchmarks import harness
from pix2pixhd_jax import checkpointing, editing, features as features_lib
from pix2pixhd_jax.editing import compositing, window as window_lib
from pix2pixhd_jax.data.synthetic import generate_example
from pix2pixhd_jax.inference import Synthesizer
from pix2pixhd_jax.models.factory import build as make_networks
from pix2pixhd_jax.optim import make_optimizers
from pix2pixhd_jax.train_step import make_init_fn


def init_workdir(path: str, config) -> str:
    """An initialised model of `config` (with instance features) + a random bank, saved as step 1 of `path`."""
    config = config.copy_and_resolve_references()
    config.model.instance_feat = True
    config.num_devices = 1
    nets = make_networks(config)
    tx_g, tx_d = make_optimizers(config.optim)
    abstract = jax.eval_shape(make_init_fn(config, nets, tx_g, tx_d, height=128, width=256), jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)

    def fill(path, a):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            return rng.normal(0.0, config.model.init_std, a.shape).astype(a.dtype)
        return (np.ones if name == "scale" else np.zeros)(a.shape, a.dtype)

    state = jax.tree_util.tree_map(jax.numpy.asarray, jax.tree_util.tree_map_with_path(fill, abstract))
    manager = checkpointing.make_manager(path, max_to_keep=1, async_save=False)
    checkpointing.save(manager, 1, state, config)
    manager.wait_until_finished()
    manager.close()
    f = config.model.feat_num
    classes = range(config.model.label_nc)
    bank = features_lib.FeatureBank(feat_num=f, centers={c: rng.normal(size=(10, f)).astype(np.float32) for c in classes},
                                    sizes={c: np.ones(10, np.int64) for c in classes},
                                    means={c: np.zeros(f, np.float32) for c in classes})
    bank.save(features_lib.bank_path(path, 1))
    return path


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64)))).astype(np.int32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def upload(client: httpx.Client, width: int, height: int, local: bool) -> dict:
    """A synthetic street of width x height uploaded as a new scene (local edits on or off)."""
    ex = generate_example(7, 0, width, height)
    files = {"label": ("label.png", png(ex["label"].astype(np.uint8)), "image/png"),
             "inst": ("inst.png", png(ex["inst"].astype(np.uint16)), "image/png")}
    return client.post("/api/scenes", files=files, data={"local": str(local).lower()}).raise_for_status().json()


def cars_by_area(scene: dict) -> list[int]:
    """The scene's car ids, largest first."""
    return [r["id"] for r in sorted((r for r in scene["instances"] if r["id"] // 1000 == 26), key=lambda r: -r["area"])]


def largest_car(scene: dict) -> int:
    return cars_by_area(scene)[0]


def measure_size(client: httpx.Client, synth: Synthesizer, width: int, height: int, rounds: int, warmup: int) -> dict:
    """Medians of local moves, a full move and the bare forward, one of each per round.

    drag:   a scene whose only edits move one car (the largest, or a median-sized one in a second
            scene): each window render reuses the last one's sums (one generator pass over the window)
    switch: a scene where the two cars are moved in turn: every move is the first of its object
            since another object's edit (two passes over the window)
    full:   the largest car moved in a scene with local edits off (a full render)
    """
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    scenes = {name: upload(client, width, height, local=True) for name in ("drag_largest", "drag_median", "switch")}
    first_ms = (time.perf_counter() - start) * 1e3 / len(scenes)
    full = upload(client, width, height, local=False)
    cars = cars_by_area(full)
    largest, median = cars[0], cars[len(cars) // 2]
    areas = {r["id"]: r["area"] for r in full["instances"]}
    moves = {"drag_largest": (scenes["drag_largest"], largest), "drag_median": (scenes["drag_median"], median),
             "switch_largest": (scenes["switch"], largest), "switch_median": (scenes["switch"], median),
             "full": (full, largest)}
    times: dict[str, list[float]] = {kind: [] for kind in (*moves, "forward")}
    render: dict[str, list[float]] = {kind: [] for kind in moves}
    server: dict[str, list[float]] = {kind: [] for kind in moves}
    for i in range(warmup + rounds):
        for kind, (scene, car) in moves.items():
            t0 = time.perf_counter()
            out = client.post(f"/api/scenes/{scene['scene_id']}/edits",
                              json={"op": "move", "instance": car, "by": [0, 2 if i % 2 == 0 else -2]})
            out = out.raise_for_status().json()
            if i >= warmup:
                times[kind].append((time.perf_counter() - t0) * 1e3)
                render[kind].append(out["render_ms"])
                server[kind].append(out["server_ms"])
        label, inst = decode(out["label_png"]), decode(out["inst_png"])
        feats = synth.feature_map(label, inst, synth.region_features(label, inst, seed=0))[None]
        t0 = time.perf_counter()
        np.asarray(synth.synthesize(label[None], inst[None], feats))
        if i >= warmup:
            times["forward"].append((time.perf_counter() - t0) * 1e3)
    med = statistics.median
    row = {"measure": "move", "size": f"{width}x{height}", "rounds": rounds, "first_scene_ms": round(first_ms, 1),
           "car_px": areas[largest], "median_car_px": areas[median]}
    for kind in moves:
        row[f"{kind}_ms"] = round(med(times[kind]), 1)
        row[f"{kind}_render_ms"] = round(med(render[kind]), 1)
        row[f"{kind}_server_ms"] = round(med(server[kind]), 1)  # the request's time in the server (render included)
    row["bare_forward_ms"] = round(med(times["forward"]), 1)
    row["load_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return row


def window_error(synth: Synthesizer, width: int, height: int, context_px: int) -> list[dict]:
    """Window render vs full render of the edited scene over the composited pixels, per edit of a car.

    The largest car and a median-sized one, each edited first thing after opening (the window
    render's two passes; the editor itself renders in full when that is cheaper, measured here anyway).
    """
    ex = generate_example(7, 0, width, height)
    label, inst = ex["label"].astype(np.int32), ex["inst"].astype(np.int32)
    cars = sorted(np.unique(inst[inst // 1000 == 26]).tolist(), key=lambda c: -(inst == c).sum())
    full_ed = editing.Editor(synth, label, inst, seed=0, local=True, window_context_px=0)
    ed = editing.Editor(synth, label, inst, seed=0, local=True, window_context_px=context_px)
    opened = (full_ed.scene, full_ed.image)
    rows = []
    for which, car in (("largest car", cars[0]), ("median car", cars[len(cars) // 2])):
        ops = {"move": lambda e: e.move(car, 0, 6), "cluster": lambda e: e.set_feature(car, cluster=1),
               "relabel": lambda e: e.relabel(car, 27), "delete": lambda e: e.delete(car)}
        for op, edit in ops.items():
            full_ed.scene, full_ed.image = opened
            edited = edit(full_ed).scene
            changed = ed.changed(edited)
            reach = ed.local_margin_px + ed.local_feather_px + 1
            box = window_lib.window_box(changed, reach, context_px, synth.divisor)
            if box is None:  # the window would be the whole image: nothing to measure
                continue
            windowed = ed.composite(edited, ed.render_window(edited, [box], op == "move").image, changed)  # two passes
            inside = compositing.blend_weights(changed, ed.local_margin_px, ed.local_feather_px) > 0
            diff = np.abs(windowed.astype(int) - full_ed.image.astype(int))[inside]
            rows.append({"measure": "window_error", "size": f"{width}x{height}", "op": f"{op} {which}",
                         "context_px": context_px, "object_px": int((inst == car).sum()),
                         "composited_px": int(inside.sum()),
                         "window": [box[0].start, box[0].stop, box[1].start, box[1].stop],
                         "mean_levels": round(float(diff.mean()), 3), "max_levels": int(diff.max()),
                         "p99_levels": float(np.percentile(diff, 99))})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def measure_select_then_edit(client: httpx.Client, swatch_client: httpx.Client, width: int, height: int,
                             rounds: int, delays_ms: list[float]) -> dict:
    """Plain edit vs the first edit after selecting a new object (its swatches rendering meanwhile)."""
    load_before = os.getloadavg()[0]
    plain, after_select, yielded, panel = [], [], 0, []
    by_delay: dict[float, list[tuple[float, float]]] = {d: [] for d in delays_ms}
    for i in range(rounds + 1):
        delay_ms = delays_ms[i % len(delays_ms)]  # round 0 compiles the swatch window shape: not reported
        scene = upload(client, width, height, local=True)
        sid, car = scene["scene_id"], {"id": largest_car(scene)}
        edits = f"/api/scenes/{sid}/edits"
        t0 = time.perf_counter()
        client.post(edits, json={"op": "move", "instance": car["id"], "by": [0, 2]}).raise_for_status()
        plain_ms = (time.perf_counter() - t0) * 1e3
        answer = {}

        def select() -> None:
            answer["r"] = swatch_client.get(f"/api/scenes/{sid}/swatches", params={"instance": car["id"]})

        selecting = threading.Thread(target=select)
        selecting.start()
        time.sleep(delay_ms / 1e3)
        t0 = time.perf_counter()
        client.post(edits, json={"op": "move", "instance": car["id"], "by": [0, -2]}).raise_for_status()
        select_ms = (time.perf_counter() - t0) * 1e3
        selecting.join()
        t0 = time.perf_counter()
        full = client.get(f"/api/scenes/{sid}/swatches", params={"instance": car["id"]}).raise_for_status().json()
        panel_ms = (time.perf_counter() - t0) * 1e3
        if i == 0:
            continue
        plain.append(plain_ms)
        after_select.append(select_ms)
        by_delay[delay_ms].append((plain_ms, select_ms))
        yielded += answer["r"].status_code == 409
        # A full panel only if the yielded request cached nothing (servers before issue 25 say nothing).
        if full.get("rendered", len(full["swatches"])) == len(full["swatches"]):
            panel.append(panel_ms)
    med = statistics.median
    per_delay = {str(d): round(med([s for _, s in v]) / med([p for p, _ in v]), 3) for d, v in by_delay.items() if v}
    return {"measure": "select_then_edit", "size": f"{width}x{height}", "select_rounds": rounds,
            "select_delays_ms": delays_ms,
            "plain_edit_ms": round(med(plain), 1), "edit_after_select_ms": round(med(after_select), 1),
            "ratio_after_select_to_plain": round(med(after_select) / med(plain), 3),
            "ratio_by_delay_ms": per_delay,
            "swatch_requests_yielded": yielded,
            "swatch_panel_uncached_ms": round(med(panel), 1) if panel else None,
            "load_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


COLUMNS: tuple[harness.Column, ...] = (
    ("measure", lambda r: r["measure"] + (f" {r['op']}" if "op" in r else "")), ("size", lambda r: r["size"]),
    ("result", lambda r: (
        f"drag: largest car ({r['car_px']} px) {r['drag_largest_ms']} ms (render {r['drag_largest_render_ms']}), "
        f"median car ({r['median_car_px']} px) {r['drag_median_ms']} ms (render {r['drag_median_render_ms']}); "
        f"switch: largest {r['switch_largest_ms']} ms, median {r['switch_median_ms']} ms; full move "
        f"{r['full_ms']} ms (render {r['full_render_ms']}); bare forward {r['bare_forward_ms']} ms"
        if r["measure"] == "move" else
        f"plain {r['plain_edit_ms']} ms, after select {r['edit_after_select_ms']} ms, ratio "
        f"{r['ratio_after_select_to_plain']}" if r["measure"] == "select_then_edit" else
        f"first full render {r['first_render_s']} s, then {r['window_shapes']} window shapes in {r['windows_s']} s"
        if r["measure"] == "warmup" else
        f"mean {r['mean_levels']}, max {r['max_levels']}, p99 {r['p99_levels']} levels over {r['composited_px']} px "
        f"(context {r['context_px']} px, window {r['window']})")),
    ("load (1 min, before / after)", lambda r: " / ".join(str(v) for v in r.get("load_1m", ["-"]))))


def warm_up_time(synth: Synthesizer, width: int, height: int) -> dict:
    """What the editor command's warm-up costs for a scene of this size: the first full render (its
    compile), then EditSession.warm_up_windows (the window shapes of in-place edits of its objects)."""
    ex = generate_example(7, 0, width, height)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    ed = editing.Editor(synth, ex["label"], ex["inst"], seed=0, local=True)
    full_s = time.perf_counter() - start
    start = time.perf_counter()
    shapes = ed.warm_up_windows()
    return {"measure": "warmup", "size": f"{width}x{height}", "first_render_s": round(full_s, 1),
            "window_shapes": len(shapes), "windows_s": round(time.perf_counter() - start, 1),
            "shapes": [f"{h}x{w}" for h, w in shapes], "load_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def serve(workdir: str) -> tuple[subprocess.Popen, httpx.Client]:
    """The editor command on a free port, once it answers."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "pix2pixhd_jax.cli.editor", f"--workdir={workdir}",
                               f"--port={port}", "--nowarmup", "--max_upload_mb=32"])
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300)
    deadline = time.monotonic() + 300
    while True:
        try:
            client.get("/api/info").raise_for_status()
            return server, client
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("the editor server did not come up") from None
            time.sleep(0.5)


def main(argv: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="synthetic_features",
                        help="config of the initialised model without --workdir (a module of configs/ or a path)")
    parser.add_argument("--workdir", default="", help="trained workdir with a feature bank (default: initialise one)")
    parser.add_argument("--sizes", default="256x128,512x256", help="comma-separated WxH")
    parser.add_argument("--rounds", type=int, default=20, help="0: skip the local / full move rounds")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--select_rounds", type=int, default=10, help="0: skip the edit-after-select rounds")
    parser.add_argument("--select_delays_ms", default="30,150,300,600",
                        help="comma-separated: how long after the swatch request the edit is sent (cycled)")
    parser.add_argument("--error_sizes", default="", help="comma-separated WxH: window render vs full render error")
    parser.add_argument("--window_context_px", type=int, default=-1, help="for --error_sizes; -1: the config's")
    parser.add_argument("--warmup_sizes", default="", help="comma-separated WxH: the editor's warm-up time")
    parser.add_argument("--out", default="", help="also write the rows as editor_latency.json and .md to this folder")
    args = parser.parse_args(argv)
    workdir = args.workdir or init_workdir(os.path.join(tempfile.mkdtemp(prefix="editor_latency_"), "w"),
                                           harness.load_config(args.config))
    synth = Synthesizer.from_workdir(workdir, defaults=process.default_config())
    results = []
    if args.rounds or args.select_rounds:
        server, client = serve(workdir)
        try:
            for size in args.sizes.split(","):
                width, height = (int(v) for v in size.lower().split("x"))
                if args.rounds:
                    results.append(measure_size(client, synth, width, height, args.rounds, args.warmup))
                    print(json.dumps(results[-1]), flush=True)
                if args.select_rounds:
                    with httpx.Client(base_url=client.base_url, timeout=300) as swatch_client:
                        results.append(measure_select_then_edit(client, swatch_client, width, height,
                                                                args.select_rounds,
                                                                [float(d) for d in args.select_delays_ms.split(",")]))
                    print(json.dumps(results[-1]), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    context = synth.config.editing.window_context_px if args.window_context_px < 0 else args.window_context_px
    for size in filter(None, args.error_sizes.split(",")):
        width, height = (int(v) for v in size.lower().split("x"))
        results.extend(window_error(synth, width, height, context))
    for size in filter(None, args.warmup_sizes.split(",")):
        width, height = (int(v) for v in size.lower().split("x"))
        results.append(warm_up_time(synth, width, height))
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"workdir": workdir, "environment": harness.environment(), "results": results}))
    if args.out:
        harness.write_results(args.out, "editor_latency", results, harness.markdown_table(results, COLUMNS))
    return results


if __name__ == "__main__":
    process.setup()  # XLA flags before the first computation
    main()
