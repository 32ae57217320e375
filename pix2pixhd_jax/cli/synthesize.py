"""Batch synthesis: python -m pix2pixhd_jax.cli.synthesize --workdir W --out DIR [--num_samples K].

Inputs come from the workdir's data config (synthetic: unseen test scenes; folder / cityscapes /
tfds: --phase), or from --source/--dataroot/--phase overrides. Writes per input a colourised
label, K outputs (K feature draws: seeds seed..seed+K-1; or E on the real photo with
--features=encode) and the real photo when present, plus index.html: label | outputs | real.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from pix2pixhd_jax.cli import process

import numpy as np
from absl import flags
from PIL import Image

from pix2pixhd_jax import inputs, storage, visualize
from pix2pixhd_jax.inference import Synthesizer


def define(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    flags.DEFINE_string("workdir", None, "training workdir (holds checkpoints/)", flag_values=fv)
    flags.DEFINE_string("out", None, "output folder for PNGs and index.html", flag_values=fv)
    flags.DEFINE_integer("step", None, "checkpoint step (default: latest)", flag_values=fv)
    flags.DEFINE_integer("num_inputs", 8, "label maps to render", flag_values=fv)
    flags.DEFINE_integer("num_samples", 1, "feature draws per input (multimodality)", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "seed of the first feature draw", flag_values=fv)
    flags.DEFINE_enum("features", "sample", ["sample", "encode"], "bank draws, or E on the real photo", flag_values=fv)
    flags.DEFINE_string("source", "", "override data.source ('folder', 'cityscapes', 'tfds', 'synthetic')",
                        flag_values=fv)
    flags.DEFINE_string("dataroot", "", "override data.dataroot (folder: {phase}_label, {phase}_inst, {phase}_img)",
                        flag_values=fv)
    flags.DEFINE_string("phase", "", "split / folder prefix (default: data.sample_split; synthetic: unseen scenes)",
                        flag_values=fv)
    flags.DEFINE_bool("pad", False, "pad sizes the generator cannot take (edge replication) and crop back",
                      flag_values=fv)
    flags.mark_flags_as_required(["workdir", "out"], flag_values=fv)


def write_page(out: str, rows: list[dict], num_samples: int) -> str:
    """out/index.html: per input, label | outputs | real."""
    columns = ["label"] + [f"output {k}" for k in range(num_samples)] + ["real"]
    cells = [[r["label"], *r["outputs"], *[None] * (num_samples - len(r["outputs"])), r.get("real")] for r in rows]
    return visualize.write_image_page(out, "pix2pixhd-jax synthesis", cells, columns=columns)


def body(fv: flags.FlagValues) -> int:
    storage.check_backend(fv.workdir, fv.out, fv.dataroot)
    synth = Synthesizer.from_workdir(fv.workdir, step=fv.step, defaults=process.default_config())
    examples = inputs.load_inputs(synth.config, source=fv.source, dataroot=fv.dataroot, phase=fv.phase,
                                  num=fv.num_inputs)
    storage.makedirs(fv.out)
    label_nc = synth.options.label_nc
    if fv.num_samples > 1 and not (fv.features == "sample" and synth.uses_features):
        why = ("this model was trained without instance features (model.instance_feat / label_feat), so its "
               "output is one image per input" if not synth.uses_features else "--features=encode takes the "
               "features from the photo, so there is one output per input")
        print(f"note: --num_samples={fv.num_samples} ignored: {why}", file=sys.stderr)
    rows = []
    for i, ex in enumerate(examples):
        row = {"label": f"{i:04d}_label.png", "outputs": []}
        storage.write_image(storage.join(fv.out, row["label"]),
                            Image.fromarray(visualize.label_to_rgb(ex["label"], label_nc)))
        k_max = fv.num_samples if (fv.features == "sample" and synth.uses_features) else 1
        for k in range(k_max):
            if fv.features == "encode" and synth.uses_features:
                if "image" not in ex:
                    raise ValueError(f"--features=encode needs real photos; input {i} has none")
                img = synth.synthesize(ex["label"], ex.get("inst"), "encode", image=ex["image"], pad=fv.pad)
            else:
                img = synth.synthesize(ex["label"], ex.get("inst"), seed=fv.seed + k, pad=fv.pad)
            name = f"{i:04d}_out{k}.png"
            storage.write_image(storage.join(fv.out, name), Image.fromarray(np.asarray(img)))
            row["outputs"].append(name)
        if "image" in ex:
            row["real"] = f"{i:04d}_real.png"
            storage.write_image(storage.join(fv.out, row["real"]), Image.fromarray(visualize.to_uint8(ex["image"])))
        rows.append(row)
    print(f"wrote {len(rows)} inputs x {max(len(r['outputs']) for r in rows)} outputs -> "
          f"{write_page(fv.out, rows, max(len(r['outputs']) for r in rows))}")


    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return process.run_command(define, body, argv, __doc__)


if __name__ == "__main__":
    process.exit_with(main(sys.argv))
