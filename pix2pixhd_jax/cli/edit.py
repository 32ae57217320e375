"""Apply a JSON edit script: python -m pix2pixhd_jax.cli.edit --workdir W --script edits.json --out DIR.

The scene is a synthetic test scene (--index) or --label/--inst PNG files. The script is a list of
edits (or {"seed": s, "edits": [...]}), e.g.
  [{"op": "set_feature", "instance": {"at": [90, 40]}, "cluster": 2},
   {"op": "relabel", "instance": 26001, "to": "vegetation"},
   {"op": "paint", "class": "road", "rect": [100, 0, 128, 60]},
   {"op": "add_object", "class": "car", "rect": [80, 150, 100, 190], "cluster": 0},
   {"op": "copy_feature", "src": 26000, "dst": 26002},
   {"op": "move", "instance": 26002, "by": [0, 12]},
   {"op": "undo"}]
The vocabulary (also move, delete, resize, flip, redo, reset) is editing.vocabulary.OPS; the interactive
editor's "download edit script" writes such a file.
Each step shows the raw generator output unless --local (or the script's top-level "local": true;
an explicit --local / --nolocal wins): then each render is composited into the previous image
around what the edit changed (config.editing margin and feather), the rest keeps its pixels.
Writes step_000.png (before) and one PNG per edit, the final label/instance maps, and index.html.
"""
from __future__ import annotations

import json
import os
import posixpath
import sys
from typing import Optional, Sequence

from pix2pixhd_jax.cli import process

import numpy as np
from absl import flags
from PIL import Image

from pix2pixhd_jax import inputs, storage, visualize
from pix2pixhd_jax.editing import vocabulary
from pix2pixhd_jax.editing.vocabulary import Editor
from pix2pixhd_jax.inference import Synthesizer


def define(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    flags.DEFINE_string("workdir", None, "training workdir (holds checkpoints/)", flag_values=fv)
    flags.DEFINE_string("script", None, "JSON edit script", flag_values=fv)
    flags.DEFINE_string("out", None, "output folder", flag_values=fv)
    flags.DEFINE_integer("step", None, "checkpoint step (default: latest)", flag_values=fv)
    flags.DEFINE_integer("index", 0, "which input of the workdir's sample inputs to edit (see synthesize)",
                         flag_values=fv)
    flags.DEFINE_string("label", "", "label-id PNG (instead of --index)", flag_values=fv)
    flags.DEFINE_string("inst", "", "instance-id PNG (with --label)", flag_values=fv)
    flags.DEFINE_bool("local", False, "composite each edit into the previous image around what it changed (default: "
                      "the script's \"local\", else off: the raw generator output)", flag_values=fv)
    flags.mark_flags_as_required(["workdir", "script", "out"], flag_values=fv)


def body(fv: flags.FlagValues) -> int:
    script = vocabulary.parse_json(storage.read_text(fv.script), f"the edit script {fv.script}")
    synth = Synthesizer.from_workdir(fv.workdir, step=fv.step, defaults=process.default_config())
    if fv.label:
        label = np.asarray(Image.open(storage.open(fv.label))).astype(np.int32)
        inst = np.asarray(Image.open(storage.open(fv.inst))).astype(np.int32) if fv.inst else None
    else:
        ex = inputs.load_inputs(synth.config, num=fv.index + 1)[fv.index]
        label, inst = ex["label"], ex.get("inst")
    seed = script.get("seed") if isinstance(script, dict) else None
    if fv["local"].present:  # the flag given on the command line wins over the script's setting
        script = {**script, "local": fv.local} if isinstance(script, dict) else {"local": fv.local, "edits": script}
    base = posixpath.dirname(os.fspath(storage.path(fv.script)))
    editor = Editor(synth, label, inst, seed=seed)
    storage.makedirs(fv.out)
    names = ["step_000.png"]
    storage.write_image(storage.join(fv.out, names[0]), Image.fromarray(editor.image))
    results = editor.apply_script(script,
                                  mask_loader=lambda p: np.asarray(Image.open(storage.open(storage.join(base, p)))))
    edits = script["edits"] if isinstance(script, dict) else script
    for i, r in enumerate(results, 1):
        names.append(f"step_{i:03d}.png")
        storage.write_image(storage.join(fv.out, names[-1]), Image.fromarray(r.image))
    label_nc = synth.options.label_nc
    storage.write_image(storage.join(fv.out, "final_label_rgb.png"),
                        Image.fromarray(visualize.label_to_rgb(editor.scene.label, label_nc)))
    storage.write_image(storage.join(fv.out, "final_label.png"), Image.fromarray(editor.scene.label.astype(np.uint8)))
    # 16-bit PNG (ids < 65536), readable by the folder loaders.
    storage.write_image(storage.join(fv.out, "final_inst.png"), Image.fromarray(editor.scene.inst.astype(np.uint16)))
    page = visualize.write_image_page(fv.out, "pix2pixhd-jax edits", [[n] for n in names],
                                      captions=["before"] + [json.dumps(e) for e in edits])
    print(f"applied {len(results)} edits -> {page}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return process.run_command(define, body, argv, __doc__)


if __name__ == "__main__":
    process.exit_with(main(sys.argv))
