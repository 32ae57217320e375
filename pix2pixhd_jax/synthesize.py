"""Batch synthesis: python -m pix2pixhd_jax.synthesize --workdir W --out DIR [--num_samples K].

Inputs come from the workdir's data config (synthetic: unseen test scenes; folder / cityscapes /
tfds: --phase), or from --source/--dataroot/--phase overrides. Writes per input a colourised
label, K outputs (K feature draws: seeds seed..seed+K-1; or E on the real photo with
--features=encode) and the real photo when present, plus index.html: label | outputs | real.
"""
from __future__ import annotations

from pix2pixhd_jax.cli_common import setup_environment

setup_environment()

import html  # noqa: E402
import os  # noqa: E402

from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "training workdir (holds checkpoints/)")
_OUT = flags.DEFINE_string("out", None, "output folder for PNGs and index.html")
_STEP = flags.DEFINE_integer("step", None, "checkpoint step (default: latest)")
_NUM_INPUTS = flags.DEFINE_integer("num_inputs", 8, "label maps to render")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "feature draws per input (multimodality)")
_SEED = flags.DEFINE_integer("seed", 0, "seed of the first feature draw")
_FEATURES = flags.DEFINE_enum("features", "sample", ["sample", "encode"], "bank draws, or E on the real photo")
_SOURCE = flags.DEFINE_string("source", "", "override data.source ('folder', 'cityscapes', 'tfds', 'synthetic')")
_DATAROOT = flags.DEFINE_string("dataroot", "", "override data.dataroot (folder: {phase}_label, {phase}_inst, {phase}_img)")
_PHASE = flags.DEFINE_string("phase", "", "split / folder prefix (default: data.sample_split; synthetic: unseen scenes)")
_PAD = flags.DEFINE_bool("pad", False, "pad sizes the generator cannot take (edge replication) and crop back")
flags.mark_flags_as_required(["workdir", "out"])


def write_page(out: str, rows: list[dict], num_samples: int) -> str:
    head = "<th>label</th>" + "".join(f"<th>output {k}</th>" for k in range(num_samples)) + "<th>real</th>"
    body = []
    for r in rows:
        cells = [f'<td><img src="{html.escape(r["label"])}"></td>']
        cells += [f'<td><img src="{html.escape(p)}"></td>' for p in r["outputs"]]
        cells.append(f'<td><img src="{html.escape(r["real"])}"></td>' if r.get("real") else "<td></td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    path = os.path.join(out, "index.html")
    with open(path, "w") as f:
        f.write("<!doctype html><html><head><meta charset=\"utf-8\"><title>pix2pixhd-jax synthesis</title>"
                "<style>img{max-width:100%}td{vertical-align:top}</style></head><body>"
                f"<table><tr>{head}</tr>\n" + "\n".join(body) + "</table></body></html>\n")
    return path


def main(argv) -> None:
    del argv
    from pix2pixhd_jax.cli_common import quiet_logs

    quiet_logs()
    import numpy as np
    from PIL import Image

    from pix2pixhd_jax import visualize
    from pix2pixhd_jax.cli_common import load_inputs
    from pix2pixhd_jax.inference import Synthesizer

    synth = Synthesizer.from_workdir(_WORKDIR.value, step=_STEP.value)
    examples = load_inputs(synth.config, source=_SOURCE.value, dataroot=_DATAROOT.value, phase=_PHASE.value,
                           num=_NUM_INPUTS.value)
    os.makedirs(_OUT.value, exist_ok=True)
    label_nc = synth.config.model.label_nc
    rows = []
    for i, ex in enumerate(examples):
        row = {"label": f"{i:04d}_label.png", "outputs": []}
        Image.fromarray(visualize.label_to_rgb(ex["label"], label_nc)).save(os.path.join(_OUT.value, row["label"]))
        k_max = _NUM_SAMPLES.value if (_FEATURES.value == "sample" and synth.uses_features) else 1
        for k in range(k_max):
            if _FEATURES.value == "encode" and synth.uses_features:
                if "image" not in ex:
                    raise ValueError(f"--features=encode needs real photos; input {i} has none")
                img = synth.synthesize(ex["label"], ex.get("inst"), "encode", image=ex["image"], pad=_PAD.value)
            else:
                img = synth.synthesize(ex["label"], ex.get("inst"), seed=_SEED.value + k, pad=_PAD.value)
            name = f"{i:04d}_out{k}.png"
            Image.fromarray(np.asarray(img)).save(os.path.join(_OUT.value, name))
            row["outputs"].append(name)
        if "image" in ex:
            row["real"] = f"{i:04d}_real.png"
            Image.fromarray(visualize.to_uint8(ex["image"])).save(os.path.join(_OUT.value, row["real"]))
        rows.append(row)
    print(f"wrote {len(rows)} inputs x {max(len(r['outputs']) for r in rows)} outputs -> "
          f"{write_page(_OUT.value, rows, max(len(r['outputs']) for r in rows))}")


if __name__ == "__main__":
    app.run(main)
