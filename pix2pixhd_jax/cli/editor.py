"""Serve the interactive editor: python -m pix2pixhd_jax.cli.editor --workdir=W [--host 127.0.0.1] [--port 8000].

Open http://127.0.0.1:8000 and click an object to select it, drag it, pick its class from the
palette or its look from its class's clusters, delete / flip / resize it, paint regions and add
objects, undo / redo, and download the image, maps and the edit script (which the `edit` command
replays). Models trained without instance features get everything but the appearance controls.
Edits are local by default (the page's "Local edits" checkbox, per tab): each new render is
composited into the current image around what the edit changed, so the rest keeps its pixels
(config.editing sets the margin and feather); --nolocal starts new tabs with raw renders.
The HTTP API the page uses is described in the README ("Interactive editor"); its routes in editing/server/app.py.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, Optional, Sequence

from pix2pixhd_jax.cli import process

import uvicorn
from absl import flags

from pix2pixhd_jax.editing.server.app import ApiError, Limits, host_pattern, make_app
from pix2pixhd_jax.inference import Synthesizer

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def define(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    flags.DEFINE_string("workdir", None, "training workdir (holds checkpoints/ and, with features, the feature bank)",
                        flag_values=fv)
    flags.DEFINE_integer("step", None, "checkpoint step (default: latest)", flag_values=fv)
    flags.DEFINE_string("host", "127.0.0.1", "interface to bind; anything but loopback exposes the editor to the "
                        "network", flag_values=fv)
    flags.DEFINE_integer("port", 8000, "port to listen on", flag_values=fv)
    flags.DEFINE_integer("max_scenes", 8, "scenes kept in memory (one per browser tab; least recently used evicted)",
                         flag_values=fv)
    flags.DEFINE_integer("max_history", 32, "undo steps kept per scene", flag_values=fv)
    flags.DEFINE_integer("max_upload_mb", 8, "largest label + instance PNG upload, in MiB", flag_values=fv)
    flags.DEFINE_bool("local", True, "new scenes start with local edits (pixels away from an edit keep their "
                      "values; the page's checkbox switches it per tab)", flag_values=fv)
    flags.DEFINE_bool("warmup", True, "compile the generator for the test scenes' size before serving, then (in the background) "
                      "its window renders for the windows of their objects", flag_values=fv)
    flags.mark_flag_as_required("workdir", flag_values=fv)


def body(fv: flags.FlagValues) -> int:
    for name in ("max_scenes", "max_history", "max_upload_mb"):
        if fv[name].value < 1:
            raise process.UsageError(f"--{name} must be at least 1, got {fv[name].value}")
    if not 0 <= fv.port < 65536:
        raise process.UsageError(f"--port must be in 0..65535, got {fv.port}")
    synth = Synthesizer.from_workdir(fv.workdir, step=fv.step, defaults=process.default_config())
    limits = Limits(max_scenes=fv.max_scenes, max_history=fv.max_history, max_upload_bytes=fv.max_upload_mb << 20)
    allowed = list(LOOPBACK) if fv.host in LOOPBACK else None
    app = make_app(synth, limits=limits, allowed_hosts=allowed, local=fv.local)
    if allowed is None:
        print(f"warning: --host={fv.host} serves the editor to the network, without authentication", flush=True)
    if fv.warmup:
        service = app.state.service
        start = time.perf_counter()
        if service.info()["test_scenes"]:
            try:
                service.create_from_index(0)  # compiles the generator once for this size
                print(f"compiled the generator for the test scenes in {time.perf_counter() - start:.1f}s")
                # Window renders compile per window shape: those of in-place edits of scene 0's objects
                # (drags whose window lands on the same bucketed lengths reuse them). That takes a while
                # (seconds per shape), so it runs beside the server on a scene no user sees.
                threading.Thread(target=_warm_up_windows, args=(next(iter(service.scenes.values())).editor,),
                                 daemon=True, name="window-warm-up").start()
            except ApiError as e:
                print(f"warm-up skipped: {e.message}")
            service.scenes.clear()
    url = f"http://{host_pattern(fv.host)}:{fv.port}"  # an IPv6 literal is bracketed in a URL
    print(f"pix2pixhd-jax editor for {synth.workdir} (step {synth.step}): {url}", flush=True)
    uvicorn.run(app, host=fv.host, port=fv.port, log_level="warning")
    return 0


def _warm_up_windows(editor: Any) -> None:
    """Compile the window renders of `editor`'s scene (a background thread; the shared renderer keeps them)."""
    start = time.perf_counter()
    try:
        shapes = editor.warm_up_windows()
    except Exception as e:  # noqa: BLE001  (a failed warm-up only means the first edits compile)
        print(f"window warm-up stopped: {e}", flush=True)
        return
    if shapes:
        print(f"compiled window renders for {len(shapes)} window shapes in {time.perf_counter() - start:.1f}s "
              "(in the background)", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return process.run_command(define, body, argv, __doc__)


if __name__ == "__main__":
    process.exit_with(main(sys.argv))
