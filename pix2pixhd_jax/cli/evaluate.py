"""Evaluate a trained run: synthesize a split's label maps and score them against the real photos.

  python -m pix2pixhd_jax.cli.evaluate --workdir=runs/demo --split=test --num=100 \
      --inception_weights=/weights/pt_inception-2015-12-05-6726825d.pth --out=runs/demo/eval.json
  python -m pix2pixhd_jax.cli.train_segmenter --config=configs/synthetic_demo.py --out=runs/seg
  python -m pix2pixhd_jax.cli.evaluate --workdir=runs/demo --segmenter=runs/seg

Always L1 and LPIPS; FID/KID with --inception_weights; the segmentation score with --segmenter.
Writes a JSON report (default <workdir>/eval_<split>.json) and prints it.
"""
from __future__ import annotations

import json
import sys
from typing import Optional, Sequence

from pix2pixhd_jax.cli import process

import jax
from absl import flags

from pix2pixhd_jax import inputs, storage
from pix2pixhd_jax.evaluation import evaluate, fid
from pix2pixhd_jax.inference import Synthesizer
from pix2pixhd_jax.models import factory


def define(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    flags.DEFINE_string("workdir", None, "training workdir holding checkpoints/ (latest step is used)", flag_values=fv)
    flags.DEFINE_string("split", "test", "split to synthesize and score", flag_values=fv)
    flags.DEFINE_integer("num", 50, "images to evaluate (0 = the whole split)", flag_values=fv)
    flags.DEFINE_integer("batch_size", 4, "images per generator call", flag_values=fv)
    flags.DEFINE_string("inception_weights", "", "pt_inception .pth/.npz (local or gs://); FID/KID skipped if empty",
                        flag_values=fv)
    flags.DEFINE_string("segmenter", "", "segmenter directory (cli.train_segmenter); adds the segmentation score",
                        flag_values=fv)
    flags.DEFINE_bool("lpips", True, "LPIPS to the real photo (--nolpips skips it)", flag_values=fv)
    flags.DEFINE_integer("kid_subsets", 10, "KID subsets", flag_values=fv)
    flags.DEFINE_integer("kid_subset_size", 1000, "KID subset size", flag_values=fv)
    flags.DEFINE_string("out", "", "JSON report path (default <workdir>/eval_<split>.json)", flag_values=fv)
    flags.mark_flag_as_required("workdir", flag_values=fv)


def body(fv: flags.FlagValues) -> int:
    synth = Synthesizer.from_workdir(fv.workdir, defaults=process.default_config(), load_bank=False)
    config = synth.config
    generate = jax.jit(factory.make_generate_fn(config, synth.nets))
    inception = fid.load_inception(fv.inception_weights) if fv.inception_weights else None
    examples = inputs.load_examples(config, fv.split, fv.num)
    segmenter = evaluate.load_segmenter_for(config, fv.segmenter, examples) if fv.segmenter else None
    report = evaluate.evaluate_generator(lambda b: generate(synth.g_params, synth.g_collections, b), examples,
                                         batch_size=fv.batch_size, inception_variables=inception,
                                         kid_subsets=fv.kid_subsets, kid_subset_size=fv.kid_subset_size,
                                         use_lpips=fv.lpips, segmenter=segmenter, progress=True)
    if segmenter is not None:
        report["segmentation"]["segmenter"] = fv.segmenter
    report.update({"workdir": fv.workdir, "step": int(synth.step), "split": fv.split})
    if inception is None:
        report["fid_note"] = "FID/KID skipped: pass --inception_weights. " + fid.MISSING_WEIGHTS_HELP
    out = fv.out or storage.join(fv.workdir, f"eval_{fv.split}.json")
    storage.write_text(out, json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return process.run_command(define, body, argv, __doc__)


if __name__ == "__main__":
    process.exit_with(main(sys.argv))
