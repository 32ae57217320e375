"""Feature control on the synthetic streets: does choosing a car's cluster set that car's colour?

  python benchmarks/feature_control.py --workdir runs/feature_control            # train (if needed), bank, measure
  python benchmarks/feature_control.py --workdir runs/demo --steps 0             # measure an existing run

1. Train a small feature-conditioned model (configs/synthetic_demo.py with model.instance_feat=True,
   shrunk by the flags below) unless the workdir already holds a checkpoint (train.run resumes).
2. Build the feature bank (inference.encode_feature_bank) over --bank_examples training scenes.
3. For every car cluster c, its *mean encoded colour*: the mean real RGB of the training cars whose
   encoded feature is nearest to centre c.
4. On --num_scenes held-out scenes, the largest car is rendered once per cluster (everything else
   fixed). Reported: Pearson r between the cluster's mean colour and the generated car's mean colour
   (all scenes x clusters x RGB channels pooled, and per channel), and the mean absolute change
   (uint8 levels) inside vs outside the edited car between renders of different clusters.
Prints one JSON line with all numbers (also written to <workdir>/feature_control.json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from pix2pixhd_jax.cli import process  # noqa: F401,E402  (sets XLA flags before JAX starts)

import numpy as np  # noqa: E402


def train_config(args):
    from configs import synthetic_demo

    config = synthetic_demo.get_config()
    config.model.instance_feat = True
    config.model.ngf = args.ngf
    config.data.synthetic_width, config.data.synthetic_height = args.width, args.height
    config.data.batch_size = 1
    config.train.max_steps = args.steps
    config.train.log_every, config.train.sample_every, config.train.checkpoint_every = 50, 500, 250
    return config


def car_colours(source, n, transform):
    """Mean real RGB ([-1, 1]) of every car instance of the first n examples: {(example, id): rgb}."""
    from pix2pixhd_jax.data.transforms import transform_example

    out = {}
    for i in range(n):
        ex = transform_example(source[i], transform, None, train=False)
        for car in np.unique(ex["inst"][ex["inst"] >= 26000]).tolist():
            out[(i, car)] = ex["image"][ex["inst"] == car].mean(0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="runs/feature_control")
    p.add_argument("--steps", type=int, default=1000, help="training steps (0: use the workdir as it is)")
    p.add_argument("--ngf", type=int, default=16)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--bank_examples", type=int, default=300)
    p.add_argument("--num_scenes", type=int, default=40)
    args = p.parse_args()

    from pix2pixhd_jax import features, inputs, train
    from pix2pixhd_jax.inference import Synthesizer, encode_feature_bank

    t0 = time.time()
    if args.steps:
        train.run(train_config(args), args.workdir)
    t_train = time.time() - t0
    bank, _ = encode_feature_bank(Synthesizer.from_workdir(args.workdir, load_bank=False),
                                  config_overrides={"num_examples": args.bank_examples})
    synth = Synthesizer.from_workdir(args.workdir)
    config = synth.config
    tcfg = inputs.transform_config(config)
    centers = bank.centers[26]
    k = len(centers)

    # Cluster -> mean real colour of the training cars it represents.
    train_src = inputs.make_source(config, "train", config.data.synthetic_num, config.data.synthetic_seed)
    real = car_colours(train_src, args.bank_examples, tcfg)
    regions = features.encode_source(synth.encode, train_src, model_cfg=config.model, transform=tcfg,
                                     num_examples=args.bank_examples, progress=False)
    is_car = regions.class_id == 26
    nearest = ((regions.features[is_car][:, None] - centers[None]) ** 2).sum(-1).argmin(1)
    colours = np.stack([real[(int(e), int(r))] for e, r in zip(regions.example[is_car], regions.region_id[is_car])])
    cluster_colour = np.stack([colours[nearest == c].mean(0) if (nearest == c).any() else np.full(3, np.nan)
                               for c in range(k)])

    # Held-out scenes: render the largest car with every cluster.
    test_src = inputs.make_source(config, "test", args.num_scenes, config.data.synthetic_seed + 20_000)
    from pix2pixhd_jax.data.transforms import transform_example

    wanted, got, inside_change, outside_change, ratios = [], [], [], [], []
    for i in range(args.num_scenes):
        ex = transform_example(test_src[i], tcfg, None, train=False)
        label, inst = ex["label"], ex["inst"]
        ids, counts = np.unique(inst[inst >= 26000], return_counts=True)
        if not len(ids) or counts.max() < label.size * config.features.min_area_fraction:
            continue
        car = int(ids[counts.argmax()])
        inside = inst == car
        renders = np.stack([np.asarray(synth.synthesize(label, inst, {car: c}, seed=0)) for c in range(k)])
        for c in range(k):
            if np.isfinite(cluster_colour[c]).all():
                wanted.append(cluster_colour[c])
                got.append(renders[c][inside].mean(0) / 127.5 - 1.0)
        diffs = [np.abs(renders[a].astype(np.float32) - renders[b]).mean(-1) for a in range(k) for b in range(a + 1, k)]
        d = np.mean(diffs, axis=0)
        inside_change.append(d[inside].mean())
        outside_change.append(d[~inside].mean())
        ratios.append(d[inside].mean() / max(d[~inside].mean(), 1e-6))
    wanted, got = np.asarray(wanted), np.asarray(got)
    again = np.asarray(synth.synthesize(label, inst, seed=3))
    result = {
        "workdir": os.path.abspath(args.workdir), "step": synth.step, "train_s": round(t_train, 1),
        "car_clusters": k, "bank_examples": args.bank_examples, "scenes_measured": len(inside_change),
        "pearson_r_pooled": float(np.corrcoef(wanted.ravel(), got.ravel())[0, 1]),
        "pearson_r_rgb": [float(np.corrcoef(wanted[:, j], got[:, j])[0, 1]) for j in range(3)],
        "mean_abs_change_inside_car": float(np.mean(inside_change)),
        "mean_abs_change_outside_car": float(np.mean(outside_change)),
        "median_inside_outside_ratio": float(np.median(ratios)),
        "cluster_mean_colours_uint8": np.round((cluster_colour + 1) * 127.5).tolist(),
        "same_seed_identical": bool(np.array_equal(again, np.asarray(synth.synthesize(label, inst, seed=3)))),
    }
    with open(os.path.join(args.workdir, "feature_control.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
