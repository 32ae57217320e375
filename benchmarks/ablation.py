"""Ablation of the beyond-the-paper options: same data, seed and step budget for every variant.

  nice -n 5 python -m benchmarks.ablation --out=runs/ablation --steps=1000 --width=128 --height=64
  nice -n 5 python -m benchmarks.ablation --out=runs/ablation --skip_train --segmenter=runs/seg128

Each variant trains with `python -m pix2pixhd_jax.cli.train` in its own process (so its peak RSS, read
with os.wait4, is its own), then `python -m pix2pixhd_jax.cli.evaluate` scores it on `--num_eval`
unseen synthetic scenes (L1 and LPIPS to the real photo, the 8- and 4-pixel lattice ratios of fake
and real images; the segmentation score against the real-photo ceiling with --segmenter). Step time is the median of the logged images/s over the run,
which shares the machine with anything else running: treat < 30% differences as noise and use
benchmarks/attention_cost.py for interleaved timings. Results: <out>/ablation.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks import harness

# The official recipe: synthetic_demo's sizes without its EMA, lattice penalty and noise inputs.
OFFICIAL = ("--config.optim.ema_decay=0.0", "--config.loss.lambda_lattice=0.0", "--config.model.noise_inputs=False")
VARIANTS = {
    # name: (workdir name, config file[:arg], extra overrides)
    "baseline": ("baseline", "configs/synthetic_demo.py", OFFICIAL),
    "+attn D": ("attn_d", "configs/synthetic_demo.py", (*OFFICIAL, "--config.model.d_attention_scales=(0,)")),
    "pix2pixHD++": ("pp", "configs/pix2pixhd_pp.py", ()),
    "pix2pixHD++ +attn D": ("pp_attn_d", "configs/pix2pixhd_pp.py:attn", ()),
    "pix2pixHD++ +R1": ("pp_r1", "configs/pix2pixhd_pp.py:r1", ()),
    "pix2pixHD++ +aug": ("pp_aug", "configs/pix2pixhd_pp.py:aug", ()),
    # Upsampling without the transposed conv's lattice (model.upsample_layer), else the baseline.
    "+resize_conv": ("up_resize", "configs/synthetic_demo.py", (*OFFICIAL, "--config.model.upsample_layer=resize_conv")),
    "+bilinear_conv": ("up_bilinear", "configs/synthetic_demo.py",
                       (*OFFICIAL, "--config.model.upsample_layer=bilinear_conv")),
    "+subpixel_icnr": ("up_icnr", "configs/synthetic_demo.py",
                       (*OFFICIAL, "--config.model.upsample_layer=subpixel_icnr")),
}
DEFAULT_VARIANTS = ("baseline", "+attn D", "pix2pixHD++", "pix2pixHD++ +attn D")


def run_child(cmd: list[str], log_path: str) -> dict[str, float]:
    """Run cmd to completion with output to log_path; wall seconds and the child's own peak RSS."""
    t = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed; see {log_path}")
    return {"wall_s": time.time() - t, "peak_rss_bytes": float(usage.ru_maxrss * 1024)}


def common_overrides(a: argparse.Namespace) -> list[str]:
    return [f"--config.train.max_steps={a.steps}", f"--config.data.synthetic_width={a.width}",
            f"--config.data.synthetic_height={a.height}", f"--config.model.d_attention_after_layer={a.attention_layer}",
            f"--config.train.log_every={a.log_every}", f"--config.train.sample_every={a.steps // 2}",
            f"--config.train.checkpoint_every={a.steps}", f"--config.seed={a.seed}"]


def read_json(path: str) -> Any:
    """The JSON document at path (the file closed again)."""
    with open(path) as f:
        return json.load(f)


def train_metrics(workdir: str) -> dict[str, Any]:
    """Median step time, last held-out L1 and final losses from a run's metrics.jsonl."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    speeds = [r["images_per_s"] for r in records if "images_per_s" in r][1:]  # first interval: warm-up
    l1 = [r["holdout_L1"] for r in records if "holdout_L1" in r]
    last = [r for r in records if "loss_G" in r][-1]
    return {"step_s": 1.0 / statistics.median(speeds), "holdout_L1_samples": l1[-1],
            "final_loss_G": last["loss_G"], "final_loss_D": last["loss_D"]}


def _fake_real(key: str, digits: int):
    """The cell 'fake (real)' of a measure reported for both image sides (key names the side as {side})."""
    nan = float("nan")
    side = lambda r, name: r.get(key.format(side=name), nan)
    return lambda r: f"{side(r, 'fake'):.{digits}f} ({side(r, 'real'):.{digits}f})"


COLUMNS: tuple[harness.Column, ...] = (
    ("variant", lambda r: r["variant"]), ("s/step", lambda r: f"{r['step_s']:.3f}"),
    ("peak RSS GB", lambda r: f"{r['peak_rss_bytes'] / 1e9:.2f}"), ("held-out L1", lambda r: f"{r['eval_l1']:.4f}"),
    ("LPIPS to real", lambda r: f"{r['lpips_to_real']:.4f}"),
    ("lattice 8px (real)", _fake_real("lattice8_{side}", 2)), ("lattice 4px (real)", _fake_real("lattice4_{side}", 2)))
SEG_COLUMNS: tuple[harness.Column, ...] = (
    ("seg pixel acc (real)", _fake_real("seg_{side}_acc", 3)), ("seg mIoU (real)", _fake_real("seg_{side}_miou", 3)))


def markdown(rows: list[dict[str, Any]]) -> str:
    """The ablation table; the segmentation columns when any row has the score."""
    seg = any("seg_fake_miou" in r for r in rows)
    return harness.markdown_table(rows, COLUMNS + SEG_COLUMNS * seg) + "\n"


def main(argv=None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma list of " + ", ".join(VARIANTS))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--attention_layer", type=int, default=1, help="model.d_attention_after_layer")
    p.add_argument("--log_every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_eval", type=int, default=100)
    p.add_argument("--segmenter", default="", help="segmenter dir (evaluation/segmentation.py) for the seg score")
    p.add_argument("--skip_train", action="store_true", help="only (re-)evaluate existing workdirs")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    rows = []
    for name in [v.strip() for v in a.variants.split(",") if v.strip()]:
        dirname, config, extra = VARIANTS[name]
        workdir = os.path.join(a.out, dirname)
        row: dict[str, Any] = {"variant": name, "config": config, "overrides": list(extra) + common_overrides(a)}
        train_cmd = [sys.executable, "-m", "pix2pixhd_jax.cli.train", f"--config={config}", f"--workdir={workdir}",
                     *row["overrides"]]
        row["train_command"] = " ".join(train_cmd[1:])
        usage_path = os.path.join(workdir, "ablation_usage.json")
        if not a.skip_train:
            os.makedirs(workdir, exist_ok=True)
            usage = run_child(train_cmd, os.path.join(workdir, "train.log"))
            harness.write_json(usage_path, usage)
        row.update(read_json(usage_path))
        row.update(train_metrics(workdir))
        eval_path = os.path.join(workdir, "eval_test.json")
        eval_cmd = [sys.executable, "-m", "pix2pixhd_jax.cli.evaluate", f"--workdir={workdir}", "--split=test",
                    f"--num={a.num_eval}", f"--out={eval_path}"] + ([f"--segmenter={a.segmenter}"] if a.segmenter else [])
        row["eval_command"] = " ".join(eval_cmd[1:])
        run_child(eval_cmd, os.path.join(workdir, "eval.log"))
        report = read_json(eval_path)
        row.update(eval_l1=report["l1"], lpips_to_real=report["lpips_to_real"])
        for side, ratios in report.get("lattice_ratio", {}).items():  # absent from reports before the figure
            row.update({f"lattice{k[len('period'):]}_{side}": v for k, v in ratios.items()})
        seg = report.get("segmentation")
        if seg:
            for side in ("fake", "real"):
                row[f"seg_{side}_acc"] = seg[side]["pixel_acc"]
                row[f"seg_{side}_miou"] = seg[side]["mean_iou"]
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}), flush=True)
    table = markdown(rows)
    harness.write_results(a.out, "ablation", rows, table)
    print(table)
    return rows


if __name__ == "__main__":
    main()
