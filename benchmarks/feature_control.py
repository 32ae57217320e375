"""Feature control on the synthetic streets: does choosing a car's cluster set that car's colour?

  python -m benchmarks.feature_control --workdir runs/feature_control            # train (if needed), bank, measure
  python -m benchmarks.feature_control --workdir runs/demo --steps 0             # measure an existing run

1. Train a small feature-conditioned model (configs/synthetic_features.py shrunk by the flags below;
   --set changes any key, e.g. the official recipe: --set model.encoder_image_skip=False
   --set model.feature_skip_G=False --set loss.lambda_region_colour=0.0 --set loss.lambda_feature_colour=0.0
   --set features.kmeans_n_init=3) unless the workdir already holds a checkpoint (train.run resumes).
2. Build the feature bank (inference.encode_feature_bank) over --bank_examples training scenes.
3. For every car cluster c, its *mean encoded colour*: the mean real RGB of the training cars whose
   encoded feature is nearest to centre c.
4. On --num_scenes held-out scenes, every car of at least the bank's minimum area is rendered once
   per cluster (everything else fixed). Reported: Pearson r between the cluster's mean colour and
   the generated car's mean colour, pooled over RGB and per channel, next to the pooled r of 1000
   shuffled cluster -> colour pairings (what pooling gives for free); the fraction of the real
   car-colour variance the clusters can express (cars the bank clusters, and every car); and the mean absolute change (uint8 levels)
   between renders of different clusters inside the car, within --near_px of it, and farther away,
   and beyond --far_px with and without the editor's local edits (compositing.composite).
5. features="encode": per-channel r between each car's real colour and its render from E's
   features of the real photo.
6. Which looks a user can pick for a car: the fraction of cars whose cluster renders include a
   light one (mean >= 170), a dark one (<= 60), a blue- and a red-dominant one.
Prints one JSON line with all numbers (also written to <workdir>/feature_control.json).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import time

from pix2pixhd_jax.cli import process

import numpy as np

from benchmarks import harness


def train_config(args):
    config = harness.load_config("synthetic_features")
    config.model.ngf = args.ngf
    config.data.synthetic_width, config.data.synthetic_height = args.width, args.height
    config.data.batch_size = 1
    config.train.max_steps = args.steps
    config.train.log_every, config.train.sample_every, config.train.checkpoint_every = 50, 500, 250
    for item in args.set:  # e.g. --set loss.lambda_region_colour=10 (values as Python literals)
        key, _, value = item.partition("=")
        section, _, name = key.rpartition(".")
        target = config
        for part in section.split(".") if section else ():
            target = target[part]
        target[name] = type(target[name])(ast.literal_eval(value))
    return config


def bank_overrides(args) -> dict:
    """The --set features.* values: they also apply when the bank of an existing workdir is rebuilt."""
    return {key.partition(".")[2]: ast.literal_eval(value)
            for key, _, value in (item.partition("=") for item in args.set) if key.startswith("features.")}


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
    p.add_argument("--near_px", type=int, default=4, help="width of the 'near' ring around an edited car")
    p.add_argument("--dominance", type=float, default=30.0,
                   help="levels by which a channel must exceed both others for a 'blue' or 'red' render")
    p.add_argument("--far_px", type=int, default=8, help="'beyond' distance for the local-edit comparison")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override of the trained model, e.g. loss.lambda_region_colour=10 (repeatable)")
    p.add_argument("--shuffles", type=int, default=1000, help="shuffled cluster->colour pairings for the baseline")
    args = p.parse_args()

    from pix2pixhd_jax import features, inputs, train
    from pix2pixhd_jax.editing import compositing
    from pix2pixhd_jax.inference import Synthesizer, encode_feature_bank

    defaults = harness.load_config("default")  # fills keys a workdir written by an older version lacks
    t0 = time.time()
    if args.steps:
        train.run(train_config(args), args.workdir, defaults=defaults)
    t_train = time.time() - t0
    bank, _ = encode_feature_bank(Synthesizer.from_workdir(args.workdir, load_bank=False, defaults=defaults),
                                  config_overrides={"num_examples": args.bank_examples, **bank_overrides(args)})
    synth = Synthesizer.from_workdir(args.workdir, defaults=defaults)
    config = synth.config
    transform = inputs.transform_config(config)
    centers = bank.centers[26]
    k = len(centers)

    # Cluster -> mean real colour of the training cars it represents.
    train_src = inputs.make_source(config, "train", config.data.synthetic_num, config.data.synthetic_seed)
    real = car_colours(train_src, args.bank_examples, transform)
    regions = features.encode_source(synth.encode, train_src, model_cfg=config.model, transform=transform,
                                     num_examples=args.bank_examples, progress=False)
    is_car = regions.class_id == 26
    nearest = ((regions.features[is_car][:, None] - centers[None]) ** 2).sum(-1).argmin(1)
    colours = np.stack([real[(int(e), int(r))] for e, r in zip(regions.example[is_car], regions.region_id[is_car])])
    cluster_colour = np.stack([colours[nearest == c].mean(0) if (nearest == c).any() else np.full(3, np.nan)
                               for c in range(k)])

    # How much of the real car-colour variance the clusters can express at all (nearest-centre groups):
    # over every car, and over the cars the bank clusters (above its area threshold).
    def explained(rows):
        assigned = cluster_colour[nearest[rows]]
        ok = np.isfinite(assigned).all(1)
        real_rows = colours[rows][ok]
        return float(1.0 - ((real_rows - assigned[ok]) ** 2).sum() / ((real_rows - real_rows.mean(0)) ** 2).sum())

    bank_sized = regions.area[is_car] > config.features.min_area_fraction

    # Held-out scenes: every car of at least the bank's minimum area, rendered once per cluster.
    test_src = inputs.make_source(config, "test", args.num_scenes, config.data.synthetic_seed + 20_000)
    from scipy import ndimage

    from pix2pixhd_jax.data.transforms import transform_example

    usable = [c for c in range(k) if np.isfinite(cluster_colour[c]).all()]
    wanted, got, pair_cluster = [], [], []
    inside_change, near_change, far_change, beyond_raw, beyond_local, looks = [], [], [], [], [], []
    encoded_pairs = []  # (real car colour, car colour rendered from E's features of the photo)
    # A channel dominates a colour when it exceeds both others by this many uint8 levels.
    dominant = lambda rgb, ch: rgb[:, ch] - np.delete(rgb, ch, axis=1).max(1) >= args.dominance
    margin, feather = config.editing.local_margin_px, config.editing.local_feather_px
    for i in range(args.num_scenes):
        ex = transform_example(test_src[i], transform, None, train=False)
        label, inst = ex["label"], ex["inst"]
        ids, counts = np.unique(inst[inst >= 26000], return_counts=True)
        encoded = np.asarray(synth.synthesize(label, inst, "encode", image=ex["image"]))  # E on the real photo
        for car in ids[counts >= label.size * config.features.min_area_fraction].tolist():
            encoded_pairs.append((ex["image"][inst == car].mean(0), encoded[inst == car].mean(0) / 127.5 - 1.0))
            inside = inst == car
            near = ndimage.binary_dilation(inside, iterations=args.near_px) & ~inside
            far = ~(inside | near)
            beyond = ~ndimage.binary_dilation(inside, iterations=args.far_px)
            renders = np.stack([np.asarray(synth.synthesize(label, inst, {car: c}, seed=0)) for c in usable])
            for j, c in enumerate(usable):
                wanted.append(cluster_colour[c])
                got.append(renders[j][inside].mean(0) / 127.5 - 1.0)
                pair_cluster.append(j)
            pairs = [(a, b) for a in range(len(usable)) for b in range(a + 1, len(usable))]
            d = np.mean([np.abs(renders[a].astype(np.float32) - renders[b]).mean(-1) for a, b in pairs], axis=0)
            # The editor's local edits: each render composited into the previous one around the car.
            local = np.mean([np.abs(compositing.composite(renders[a], renders[b], inside, margin, feather)
                                    .astype(np.float32) - renders[a]).mean(-1) for a, b in pairs], axis=0)
            means = renders[:, inside].mean(1)  # (clusters, 3) uint8 levels
            looks.append({"light": bool((means.mean(1) >= 170).any()), "dark": bool((means.mean(1) <= 60).any()),
                          "blue": bool(dominant(means, 2).any()), "red": bool(dominant(means, 0).any())})
            beyond_raw.append(d[beyond].mean())
            beyond_local.append(local[beyond].mean())
            inside_change.append(d[inside].mean())
            near_change.append(d[near].mean() if near.any() else 0.0)
            far_change.append(d[far].mean())
    wanted, got, pair_cluster = np.asarray(wanted), np.asarray(got), np.asarray(pair_cluster)
    pearson = lambda x, y: float(np.corrcoef(x.ravel(), y.ravel())[0, 1])
    # Pooled RGB r gives some correlation for free (colour channels co-vary): the same r with the
    # cluster -> colour pairing shuffled is the baseline a real result must beat.
    rng = np.random.default_rng(0)
    table = np.stack([cluster_colour[c] for c in usable])
    shuffled = [pearson(table[rng.permutation(len(usable))][pair_cluster], got) for _ in range(args.shuffles)]
    again = np.asarray(synth.synthesize(label, inst, seed=3))
    result = {
        "workdir": os.path.abspath(args.workdir), "step": synth.step, "train_s": round(t_train, 1),
        "car_clusters": k, "bank_examples": args.bank_examples, "cars_measured": len(inside_change),
        "scenes": args.num_scenes,
        "pearson_r_pooled": pearson(wanted, got),
        "pearson_r_rgb": [pearson(wanted[:, j], got[:, j]) for j in range(3)],
        "shuffled_pooled_r_mean": float(np.mean(shuffled)), "shuffled_pooled_r_p95": float(np.quantile(shuffled, 0.95)),
        "shuffled_pooled_r_max": float(np.max(shuffled)),
        "encode_pearson_r_rgb": [pearson(np.asarray([p[0][j] for p in encoded_pairs]),
                                         np.asarray([p[1][j] for p in encoded_pairs])) for j in range(3)],
        "real_colour_variance_explained_by_clusters": explained(bank_sized),
        "real_colour_variance_explained_all_cars": explained(np.ones_like(bank_sized)),
        "cluster_colour_span_uint8": float(np.ptp(np.round((table + 1) * 127.5), axis=0).max()),
        "mean_abs_change_inside_car": float(np.mean(inside_change)),
        f"mean_abs_change_near_car_{args.near_px}px": float(np.mean(near_change)),
        "mean_abs_change_far_from_car": float(np.mean(far_change)),
        f"mean_abs_change_beyond_{args.far_px}px_raw": float(np.mean(beyond_raw)),
        f"mean_abs_change_beyond_{args.far_px}px_local_edits": float(np.mean(beyond_local)),
        # Fraction of measured cars whose renders over the clusters include each look, and all four.
        **{f"cars_offering_{look}": float(np.mean([c[look] for c in looks])) for look in ("light", "dark", "blue", "red")},
        "cars_offering_all_four_looks": float(np.mean([all(c.values()) for c in looks])),
        "cluster_mean_colours_uint8": np.round((cluster_colour + 1) * 127.5).tolist(),
        "same_seed_identical": bool(np.array_equal(again, np.asarray(synth.synthesize(label, inst, seed=3)))),
    }
    harness.write_json(os.path.join(args.workdir, "feature_control.json"), result, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    process.setup()  # XLA flags before the first computation
    main()
