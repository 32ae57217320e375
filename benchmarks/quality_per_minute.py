"""Quality per minute: the official recipe against the README main job's recipe, on equal time budgets.

  python -m benchmarks.quality_per_minute --out=runs/qpm --minutes=2,5,10,20 --clock=cpu --segmenter=runs/seg
  python -m benchmarks.quality_per_minute --out=runs/qpm_both --recipes= \
      --merge=runs/qpm_official/quality_per_minute.json,runs/qpm_demo/quality_per_minute.json --clock=cpu

Each recipe trains ONCE (`python -m pix2pixhd_jax.cli.train` in its own process, --config with the
recipe's overrides) and saves a checkpoint every --snapshot_every steps; this process reads the
run's clock a few times a second and notes the clock reading at which each checkpoint appeared.
When the clock passes the last budget mark the run is sent SIGINT: it saves the step in flight
and exits. Afterwards, for each mark, the newest checkpoint that existed at that clock reading
(the stop checkpoint for the last mark) is scored on --num_eval held-out scenes: L1 and LPIPS to
the real photo, the 8- and 4-pixel lattice ratios (pix2pixhd_jax/evaluation/lattice.py; real
photos ~1) and, with --segmenter, the segmentation score (pixel accuracy, mean IoU). So a budget
mark is matched to a state at most --snapshot_every steps older than the mark.

Recipes:
  official  --config with every RECIPE_KEYS key reset to configs/default.py's value (the paper's recipe
            at the README main job's sizes: no EMA, transposed-conv upsampling, lr 2e-4, the official
            perceptual layer weights)
  demo      --config as it is (configs/synthetic_demo.py: the recipe the README main job trains)

Clocks (--clock), both counting from the training process's start, so start-up (imports, data,
compilation) is part of what a budget buys:
  wall  seconds since the process started (the default: what a user waits); on a machine shared
        with other work, load stretches it
  cpu   the process's CPU seconds (user + system, all its threads and children) divided by the
        cores it may use (its CPU affinity): about the wall time of the same run on an otherwise
        idle machine, so load-robust; it does not count time the run spends waiting (file I/O)

--merge adds the rows of earlier result files (same clock) for recipes not run now, so recipes
measured in separate sessions share one table and plot; with --recipes= it only re-draws them.

Results: <out>/quality_per_minute.json (rows), .md (the table) and .png (quality against minutes,
one line per recipe); training logs and workdirs under <out>/<recipe>/.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Optional, Sequence

from pix2pixhd_jax.cli import process

import numpy as np
import psutil
from PIL import Image, ImageDraw

from benchmarks import harness

# The keys by which the demo's recipe differs from the paper's; 'official' resets them to
# configs/default.py's values (the demo's sizes, data and VGG16 backbone stay).
RECIPE_KEYS = ("optim.ema_decay", "optim.lr_G", "optim.lr_D", "model.upsample_layer", "model.noise_inputs",
               "loss.lambda_lattice", "loss.vgg_layers", "loss.vgg_layer_weights")
RECIPES = ("official", "demo")
CLOCKS = ("wall", "cpu")
POLL_S = 0.25


def recipe_overrides(recipe: str) -> list[str]:
    """--config.* flags that turn --config into `recipe` (none for 'demo')."""
    if recipe == "demo":
        return []
    if recipe != "official":
        raise ValueError(f"recipe {recipe!r} is not one of {RECIPES} (--recipes)")
    from pix2pixhd_jax.configs import default
    reference = default.get_config()
    out = []
    for key in RECIPE_KEYS:
        section, name = key.split(".")
        out.append(f"--config.{key}={reference[section][name]}")
    return out


def make_clock(kind: str, proc: psutil.Process) -> Callable[[], float]:
    """Seconds on clock `kind` (module docstring) of the process `proc`, from its start."""
    if kind == "wall":
        start = proc.create_time()
        return lambda: time.time() - start
    if kind == "cpu":
        cores = len(proc.cpu_affinity()) if hasattr(proc, "cpu_affinity") else os.cpu_count()

        def cpu_seconds() -> float:
            t = proc.cpu_times()
            return (t.user + t.system + t.children_user + t.children_system) / cores

        return cpu_seconds
    raise ValueError(f"clock {kind!r} is not one of {CLOCKS} (--clock)")


def checkpoint_steps(workdir: str) -> set[int]:
    """Steps of the finished checkpoints in workdir/checkpoints (Orbax renames a save into place when done)."""
    folder = os.path.join(workdir, "checkpoints")
    return {int(n) for n in os.listdir(folder) if n.isdigit()} if os.path.isdir(folder) else set()


def pick_snapshots(appeared: dict[int, float], marks_s: Sequence[float]) -> list[Optional[int]]:
    """Per mark (clock seconds), the newest checkpoint step that had appeared by then (None: none yet).

    The last mark takes the newest checkpoint of all: the save of the stop request sent at that mark.
    """
    picks = [max((s for s, c in appeared.items() if c <= mark), default=None) for mark in marks_s[:-1]]
    return picks + [max(appeared, default=None)]


_DEFAULT_SIGINT_THEN_EXEC = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                             "os.execv(sys.argv[1], sys.argv[1:])")


def train_with_snapshots(cmd: list[str], workdir: str, marks_s: Sequence[float], clock_kind: str,
                         log_path: str) -> dict[str, Any]:
    """Run the training command until `clock_kind` passes the last mark; when each checkpoint appeared."""
    os.makedirs(workdir, exist_ok=True)
    appeared: dict[int, float] = {}
    with open(log_path, "w") as log:
        # SIGINT at its default disposition, as from a terminal: the trainer turns it into save-and-stop.
        # The child restores it and then becomes the command (a preexec_fn would fork this JAX process).
        child = subprocess.Popen([sys.executable, "-c", _DEFAULT_SIGINT_THEN_EXEC, *cmd], stdout=log,
                                 stderr=subprocess.STDOUT)
        proc = psutil.Process(child.pid)
        clock, stopped_at = make_clock(clock_kind, proc), None
        while child.poll() is None:
            try:
                now = clock()
            except psutil.NoSuchProcess:  # exited between poll() and the read
                break
            for step in checkpoint_steps(workdir) - appeared.keys():
                appeared[step] = now
            # Stop once a checkpoint exists: the trainer's stop handler is installed by then (a SIGINT
            # during the imports would end the run unsaved).
            if stopped_at is None and now >= marks_s[-1] and appeared:
                stopped_at = now
                child.send_signal(signal.SIGINT)
            time.sleep(POLL_S)
        status = child.wait()
    if stopped_at is None:
        raise RuntimeError(f"{' '.join(cmd)} exited with status {status} before the last budget mark; see {log_path}")
    for step in checkpoint_steps(workdir) - appeared.keys():  # the save of the stop request
        appeared[step] = stopped_at
    if status != process.INTERRUPTED:
        raise RuntimeError(f"{' '.join(cmd)} exited with status {status} after the stop request, not "
                           f"{process.INTERRUPTED} (stopped and saved); see {log_path}")
    return {"appeared": appeared, "stopped_at_s": stopped_at, "exit_status": status}


def saved_config(workdir: str) -> Any:
    """The config a training run saved beside its checkpoints (keys it lacks from configs/default.py)."""
    from pix2pixhd_jax.configs import default
    from pix2pixhd_jax.inference import Synthesizer
    return Synthesizer.from_workdir(workdir, defaults=default.get_config(), load_bank=False).config


def evaluate_snapshot(workdir: str, step: int, examples: list, segmenter: Any, use_lpips: bool) -> dict[str, Any]:
    """The evaluation report of G (its EMA where the run keeps one) at checkpoint `step`."""
    import jax

    from pix2pixhd_jax.configs import default
    from pix2pixhd_jax.evaluation import evaluate
    from pix2pixhd_jax.inference import Synthesizer
    from pix2pixhd_jax.models import factory

    synth = Synthesizer.from_workdir(workdir, step=step, defaults=default.get_config(), load_bank=False)
    generate = jax.jit(factory.make_generate_fn(synth.config, synth.nets))
    return evaluate.evaluate_generator(lambda b: generate(synth.g_params, synth.g_collections, b), examples,
                                       use_lpips=use_lpips, segmenter=segmenter)


def merged_results(paths: str, clock: str, *, skip_recipes: Sequence[str]) -> tuple[list[dict], dict]:
    """(rows, real-photo scores) of earlier result files, minus the recipes in skip_recipes (run again now)."""
    rows, real = [], {}
    for path in filter(None, (p.strip() for p in paths.split(","))):
        with open(path) as f:
            saved = json.load(f)
        if saved.get("clock") != clock:
            raise ValueError(f"--merge: {path} was measured on the {saved.get('clock')!r} clock, this run uses "
                             f"{clock!r}; rows on different clocks do not share an axis")
        rows += [r for r in saved["rows"] if r["recipe"] not in skip_recipes]
        real = real or saved.get("real_photos", {})
    return rows, real


def report_row(report: dict[str, Any]) -> dict[str, float]:
    """The flat numbers of one evaluation report that the table and plot show."""
    row = {"l1": report["l1"], "lpips": report.get("lpips_to_real")}
    for side, ratios in report["lattice_ratio"].items():
        row.update({f"lattice{k[len('period'):]}_{side}": v for k, v in ratios.items()})
    for side, scores in report.get("segmentation", {}).items():
        if isinstance(scores, dict):
            row[f"seg_acc_{side}"], row[f"seg_miou_{side}"] = scores["pixel_acc"], scores["mean_iou"]
    return row


def _cell(key: str, digits: int) -> Callable[[dict], str]:
    return lambda r: "" if r.get(key) is None or math.isnan(r[key]) else f"{r[key]:.{digits}f}"


COLUMNS: tuple[harness.Column, ...] = (
    ("recipe", lambda r: r["recipe"]), ("budget (min)", lambda r: "" if r["minutes"] is None else f"{r['minutes']:g}"),
    ("step", lambda r: "no checkpoint yet" if r["step"] is None else str(r["step"])),
    ("seg pixel acc", _cell("seg_acc_fake", 3)), ("seg mIoU", _cell("seg_miou_fake", 3)),
    ("LPIPS to real", _cell("lpips", 3)), ("L1", _cell("l1", 3)),
    ("lattice 8 px", _cell("lattice8_fake", 2)), ("lattice 4 px", _cell("lattice4_fake", 2)))


def markdown(rows: Sequence[dict], clock: str, real: dict[str, float]) -> str:
    """The table, its clock named, with the real photos' scores as the last line."""
    ceiling = {"recipe": "real photos", "minutes": None, "step": "", **real}
    table = harness.markdown_table(list(rows) + [ceiling], COLUMNS)
    return f"Budget clock: {clock} (benchmarks/quality_per_minute.py).\n\n{table}\n"


# Panels of the plot: (row key, title), lower or higher is better as the title says.
PANELS = (("seg_miou_fake", "seg mIoU (higher is better)"), ("lpips", "LPIPS to real (lower is better)"),
          ("l1", "L1 to real (lower is better)"), ("lattice8_fake", "lattice ratio 8 px (1 = none)"))
COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))


def plot_png(rows: Sequence[dict], path: str, clock: str) -> None:
    """Quality against minutes, one panel per measure, one line per recipe (PIL; no plotting library)."""
    pw, ph, margin = 360, 240, 48
    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    image = Image.new("RGB", (2 * pw, 2 * ph + 28), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 2 * ph + 8), f"x: training minutes ({clock} clock)", fill="black")
    for i, (recipe, colour) in enumerate(zip(recipes, COLOURS)):  # the legend: a swatch and the recipe's name
        x = 2 * pw - 220 + 110 * i
        draw.rectangle([x, 2 * ph + 10, x + 12, 2 * ph + 18], fill=colour)
        draw.text((x + 16, 2 * ph + 8), recipe, fill="black")
    minutes = [r["minutes"] for r in rows]
    x0, x1 = 0.0, max(minutes) if minutes else 1.0
    for p, (key, title) in enumerate(PANELS):
        ox, oy = (p % 2) * pw, (p // 2) * ph
        left, top, right, bottom = ox + margin, oy + 24, ox + pw - 12, oy + ph - 24
        draw.text((ox + margin, oy + 6), title, fill="black")
        draw.rectangle([left, top, right, bottom], outline="black")
        values = [r[key] for r in rows if r.get(key) is not None and not math.isnan(r[key])]
        if not values:
            draw.text((left + 8, top + 8), "not measured", fill="gray")
            continue
        lo, hi = min(values), max(values)
        lo, hi = (lo - 0.5, hi + 0.5) if hi - lo < 1e-9 else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        sx = lambda m: left + (right - left) * (m - x0) / ((x1 - x0) or 1.0)
        sy = lambda v: bottom - (bottom - top) * (v - lo) / (hi - lo)
        for v in (lo, hi):
            draw.text((ox + 2, sy(v) - 6), f"{v:.3g}", fill="black")
        for m in sorted(set(minutes)):
            draw.text((sx(m) - 6, bottom + 4), f"{m:g}", fill="black")
        for recipe, colour in zip(recipes, COLOURS):
            points = [(sx(r["minutes"]), sy(r[key])) for r in rows
                      if r["recipe"] == recipe and r.get(key) is not None and not math.isnan(r[key])]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            for x, y in points:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    image.save(path)


def main(argv: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/quality_per_minute")
    p.add_argument("--config", default="configs/synthetic_demo.py", help="the config both recipes start from")
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma list of " + ", ".join(RECIPES))
    p.add_argument("--minutes", default="2,5,10,20", help="budget marks, minutes on --clock")
    p.add_argument("--clock", default="wall", choices=CLOCKS, help="wall: elapsed time; cpu: CPU time / cores")
    p.add_argument("--snapshot_every", type=int, default=20, help="steps between checkpoints (mark resolution)")
    p.add_argument("--num_eval", type=int, default=100, help="held-out scenes scored per snapshot")
    p.add_argument("--segmenter", default="", help="segmenter dir (cli.train_segmenter): adds the segmentation score")
    p.add_argument("--nolpips", action="store_true", help="skip LPIPS")
    p.add_argument("--keep_checkpoints", action="store_true", help="keep every checkpoint (default: the scored ones)")
    p.add_argument("--extra", default="", help="space-separated --config.* flags for both recipes (sizes, tests)")
    p.add_argument("--merge", default="", help="comma list of earlier quality_per_minute.json files on the same "
                   "clock: their rows of recipes not run now join the table and plot (--recipes= only re-draws)")
    a = p.parse_args(argv)
    marks = sorted(float(m) for m in a.minutes.split(","))
    if not marks or marks[0] <= 0:
        raise ValueError(f"--minutes={a.minutes!r}: give positive budget marks, e.g. 2,5,10,20")
    recipes = [r.strip() for r in a.recipes.split(",") if r.strip()]
    merged_rows, merged_real = merged_results(a.merge, a.clock, skip_recipes=recipes)
    if not recipes and not merged_rows:
        raise ValueError("nothing to report: give --recipes to run, or --merge with earlier results")
    runs = {}
    for recipe in recipes:
        workdir = os.path.abspath(os.path.join(a.out, recipe))
        if os.path.exists(workdir):
            shutil.rmtree(workdir)  # a budget run starts from scratch: a resume would skip the start-up cost
        overrides = recipe_overrides(recipe) + a.extra.split() + [
            "--config.train.max_steps=1000000000", f"--config.train.checkpoint_every={a.snapshot_every}",
            "--config.train.keep_checkpoints=1000000"]
        cmd = [sys.executable, "-m", "pix2pixhd_jax.cli.train", f"--config={a.config}", f"--workdir={workdir}",
               *overrides]
        print(f"{recipe}: training to {marks[-1]:g} min on the {a.clock} clock: {' '.join(cmd[1:])}", flush=True)
        runs[recipe] = {"workdir": workdir, "command": " ".join(cmd[1:]),
                        **train_with_snapshots(cmd, workdir, [60 * m for m in marks], a.clock,
                                               os.path.join(a.out, f"{recipe}.log"))}

    rows, real = list(merged_rows), dict(merged_real)
    if runs:
        from pix2pixhd_jax import inputs
        from pix2pixhd_jax.evaluation import evaluate

        first = next(iter(runs.values()))["workdir"]  # its saved config: the sizes and data every run trained on
        config = saved_config(first)
        examples = inputs.load_examples(config, "test", a.num_eval)
        segmenter = evaluate.load_segmenter_for(config, a.segmenter, examples) if a.segmenter else None
    for recipe, run in runs.items():
        picks = pick_snapshots(run["appeared"], [60 * m for m in marks])
        for minutes, step in zip(marks, picks):
            row: dict[str, Any] = {"recipe": recipe, "minutes": minutes, "clock": a.clock, "step": step,
                                   "snapshot_clock_s": None if step is None else run["appeared"][step]}
            if step is not None:
                report = evaluate_snapshot(run["workdir"], step, examples, segmenter, not a.nolpips)
                scores = report_row(report)
                row.update({k: v for k, v in scores.items() if not k.endswith("_real")})
                real = {k[:-len("_real")] + "_fake": v for k, v in scores.items() if k.endswith("_real")}
            rows.append(row)
            print(json.dumps(row), flush=True)
        if not a.keep_checkpoints:
            for step in set(checkpoint_steps(run["workdir"])) - set(picks):
                shutil.rmtree(os.path.join(run["workdir"], "checkpoints", str(step)))
    table = markdown(rows, a.clock, real)
    marks = sorted(set(marks if runs else ()) | {r["minutes"] for r in rows})
    harness.write_results(a.out, "quality_per_minute", {"clock": a.clock, "minutes": marks, "rows": rows,
                                                        "real_photos": real, "merged_from": a.merge, "runs": {
                                                            r: {k: v for k, v in run.items() if k != "appeared"}
                                                            for r, run in runs.items()}}, table)
    plot_png(rows, os.path.join(a.out, "quality_per_minute.png"), a.clock)
    print(table)
    return rows


if __name__ == "__main__":
    process.setup()
    main()
