"""Apply a JSON edit script: python -m pix2pixhd_jax.edit --workdir W --script edits.json --out DIR.

The scene is a synthetic test scene (--index) or --label/--inst PNG files. The script is a list of
edits (or {"seed": s, "edits": [...]}), e.g.
  [{"op": "set_feature", "instance": {"at": [90, 40]}, "cluster": 2},
   {"op": "relabel", "instance": 26001, "to": "vegetation"},
   {"op": "paint", "class": "road", "rect": [100, 0, 128, 60]},
   {"op": "add_object", "class": "car", "rect": [80, 150, 100, 190], "cluster": 0},
   {"op": "copy_feature", "src": 26000, "dst": 26002},
   {"op": "undo"}]
Writes step_000.png (before) and one PNG per edit, the final label/instance maps, and index.html.
"""
from __future__ import annotations

from pix2pixhd_jax.cli_common import setup_environment

setup_environment()

import html  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "training workdir (holds checkpoints/)")
_SCRIPT = flags.DEFINE_string("script", None, "JSON edit script")
_OUT = flags.DEFINE_string("out", None, "output folder")
_STEP = flags.DEFINE_integer("step", None, "checkpoint step (default: latest)")
_INDEX = flags.DEFINE_integer("index", 0, "which input of the workdir's sample inputs to edit (see synthesize)")
_LABEL = flags.DEFINE_string("label", "", "label-id PNG (instead of --index)")
_INST = flags.DEFINE_string("inst", "", "instance-id PNG (with --label)")
flags.mark_flags_as_required(["workdir", "script", "out"])


def main(argv) -> None:
    del argv
    from pix2pixhd_jax.cli_common import quiet_logs

    quiet_logs()
    import numpy as np
    from PIL import Image

    from pix2pixhd_jax import visualize
    from pix2pixhd_jax.cli_common import load_inputs
    from pix2pixhd_jax.editing import Editor
    from pix2pixhd_jax.inference import Synthesizer

    synth = Synthesizer.from_workdir(_WORKDIR.value, step=_STEP.value)
    if _LABEL.value:
        label = np.asarray(Image.open(_LABEL.value)).astype(np.int32)
        inst = np.asarray(Image.open(_INST.value)).astype(np.int32) if _INST.value else None
    else:
        ex = load_inputs(synth.config, num=_INDEX.value + 1)[_INDEX.value]
        label, inst = ex["label"], ex.get("inst")
    with open(_SCRIPT.value) as f:
        script = json.load(f)
    seed = script.get("seed") if isinstance(script, dict) else None
    base = os.path.dirname(os.path.abspath(_SCRIPT.value))
    editor = Editor(synth, label, inst, seed=seed)
    os.makedirs(_OUT.value, exist_ok=True)
    names = ["step_000.png"]
    Image.fromarray(editor.image).save(os.path.join(_OUT.value, names[0]))
    results = editor.apply_script(script, mask_loader=lambda p: np.asarray(Image.open(os.path.join(base, p))))
    edits = script["edits"] if isinstance(script, dict) else script
    for i, r in enumerate(results, 1):
        names.append(f"step_{i:03d}.png")
        Image.fromarray(r.image).save(os.path.join(_OUT.value, names[-1]))
    label_nc = synth.config.model.label_nc
    Image.fromarray(visualize.label_to_rgb(editor.scene.label, label_nc)).save(os.path.join(_OUT.value, "final_label_rgb.png"))
    Image.fromarray(editor.scene.label.astype(np.uint8)).save(os.path.join(_OUT.value, "final_label.png"))
    # 16-bit PNG (ids < 65536), readable by the folder loaders.
    Image.fromarray(editor.scene.inst.astype(np.uint16)).save(os.path.join(_OUT.value, "final_inst.png"))
    items = [f"<h3>{'before' if i == 0 else html.escape(json.dumps(edits[i - 1]))}</h3><img src=\"{n}\">"
             for i, n in enumerate(names)]
    with open(os.path.join(_OUT.value, "index.html"), "w") as f:
        f.write("<!doctype html><html><body>" + "\n".join(items) + "</body></html>\n")
    print(f"applied {len(results)} edits -> {os.path.join(_OUT.value, 'index.html')}")


if __name__ == "__main__":
    app.run(main)
