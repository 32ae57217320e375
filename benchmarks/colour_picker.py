"""The editor's colour picker, measured: does asking a car for a colour render that colour?

  python -m benchmarks.colour_picker --workdir=runs/feat --cars=5

For a colour-anchored model (loss.lambda_feature_colour > 0, e.g. configs/synthetic_features.py),
the picker's `set_colour` edit sets feature channels 0..2 of an object to rgb / 127.5 - 1 and keeps
the rest. Here: on the first held-out scenes, the largest car of each scene (--cars scenes); every
region's features are E's encoding of the real photo (no feature bank needed), then the car's
feature is the one `set_colour` makes for each wanted colour (channels 0..2 = rgb / 127.5 - 1, then
editing.colour_corrections renders that move them by the measured shortfall; the editor renders
the car's window for those, here the whole scene) and the scene is rendered. Reported per colour: the
car's rendered mean colour (over its pixels, as the anchor is the region's mean colour) averaged
over the cars, and per channel the mean absolute error over the cars in uint8 levels (the goal:
every channel within 30 levels).
One JSON line per colour and a Markdown table; --out writes colour_picker.json / .md there.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any, Optional, Sequence

from pix2pixhd_jax.cli import process

import numpy as np

from benchmarks import harness

# The saturated colours and the extremes a user picks first (uint8 RGB).
COLOURS = {"red": (255, 32, 32), "green": (40, 200, 60), "blue": (32, 64, 255), "white": (240, 240, 240),
           "black": (16, 16, 16)}
CAR = 26  # the Cityscapes id of 'car'


def largest_car(label: np.ndarray, pool: np.ndarray) -> Optional[int]:
    """The region id of the largest car in one scene (None if it has none)."""
    ids, counts = np.unique(pool[label == CAR], return_counts=True)
    return int(ids[np.argmax(counts)]) if ids.size else None


def measure(workdir: str, cars: int, colours: dict[str, tuple[int, int, int]],
            corrections: Optional[int] = None) -> list[dict[str, Any]]:
    """Rows per colour: wanted, rendered mean over cars, mean abs error per channel (levels)."""
    from pix2pixhd_jax.configs import default
    from pix2pixhd_jax import inputs
    from pix2pixhd_jax.models import factory
    from pix2pixhd_jax.editing.options import EditorOptions
    from pix2pixhd_jax.editing.scene import corrected_colour_feature
    from pix2pixhd_jax.inference import Synthesizer

    synth = Synthesizer.from_workdir(workdir, defaults=default.get_config(), load_bank=False)
    options = EditorOptions.from_config(synth.config)
    if corrections is not None:
        options = dataclasses.replace(options, colour_corrections=corrections)
    if not synth.colour_features:
        raise ValueError(f"{workdir} was trained without loss.lambda_feature_colour > 0: its features are not "
                         "colours (train with --config=configs/synthetic_features.py)")
    rendered = {name: [] for name in colours}
    found = 0
    for example in inputs.load_examples(synth.config, "test", 4 * cars):
        label, inst, image = example["label"][None], example["inst"][None], example["image"][None]
        pool = np.asarray(factory.pool_ids(synth.config.model, label, inst))
        car = largest_car(label[0], pool[0])
        if car is None:
            continue
        feats = np.array(synth.encode(image, pool))
        mask = pool[0] == car
        current = feats[0][mask][0].copy()

        def rendered_mean(vector: np.ndarray) -> np.ndarray:
            feats[0][mask] = vector
            return np.asarray(synth.synthesize(label, inst, feats))[0][mask].astype(np.float64).mean(axis=0)

        for name, rgb in colours.items():
            vector = corrected_colour_feature(rgb, current, rendered_mean, corrections=options.colour_corrections,
                                              bound=options.colour_feature_bound)
            rendered[name].append(rendered_mean(vector))
        found += 1
        if found == cars:
            break
    if found < cars:
        raise ValueError(f"only {found} of the first {4 * cars} test scenes hold a car; ask for --cars={found}")
    rows = []
    for name, rgb in colours.items():
        got = np.asarray(rendered[name])
        per_channel = np.abs(got - np.asarray(rgb)).mean(axis=0)  # averaged over cars
        rows.append({"colour": name, "wanted": list(rgb), "rendered_mean": got.mean(axis=0).round(1).tolist(),
                     "mean_abs_error_levels": float(per_channel.mean()),
                     "mean_abs_error_per_channel": per_channel.round(1).tolist(),
                     "within_30_levels_per_channel": bool((per_channel <= 30).all()),
                     "per_car": got.round(1).tolist(), "corrections": options.colour_corrections,
                     "workdir": workdir, "step": int(synth.step)})
    return rows


COLUMNS: tuple[harness.Column, ...] = (
    ("colour", lambda r: r["colour"]), ("wanted", lambda r: str(tuple(r["wanted"]))),
    ("rendered (mean over cars)", lambda r: str(tuple(int(round(v)) for v in r["rendered_mean"]))),
    ("mean abs error R / G / B (levels)", lambda r: " / ".join(f"{v:.1f}" for v in r["mean_abs_error_per_channel"])),
    ("all channels <= 30", lambda r: "yes" if r["within_30_levels_per_channel"] else "no"))


def main(argv: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="a run of configs/synthetic_features.py (colour-anchored)")
    p.add_argument("--cars", type=int, default=5, help="held-out scenes (largest car of each)")
    p.add_argument("--corrections", type=int, default=None,
                   help="set_colour's correction renders (default: the run's editing.colour_corrections)")
    p.add_argument("--out", default="", help="also write colour_picker.json and .md to this folder")
    a = p.parse_args(argv)
    rows = measure(a.workdir, a.cars, COLOURS, a.corrections)
    for row in rows:
        print(json.dumps({k: v for k, v in row.items() if k != "per_car"}))
    table = harness.markdown_table(rows, COLUMNS)
    print(table)
    if a.out:
        harness.write_results(a.out, "colour_picker", rows, table)
    return rows


if __name__ == "__main__":
    process.setup()
    main()
