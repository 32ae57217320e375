"""Data speed: synthetic triplets/s on one core, and pipeline batches/s from PNG folders.

  python -m benchmarks.data_speed                       # 512x256 generator, 1024x512 folder pipeline
  python -m benchmarks.data_speed --width 2048 --height 1024 --num 10 --skip_pipeline
  python -m benchmarks.run --suite=data                 # the same two measurements in the suite's table

The generator is timed in this process with numpy's thread pools pinned to one thread (the
issue's "one core" target is >= 20 triplets/s at 512x256). The pipeline is timed on a temporary
folder dataset written by the synthetic CLI code, with worker_count 0 and --workers processes.
With --out, the rows also go to <out>/data_speed.json and .md.
"""
from __future__ import annotations

import os

# One core for the generator measurement: set before numpy starts its thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from benchmarks import harness  # noqa: E402
from pix2pixhd_jax.data import folders, pipeline, synthetic  # noqa: E402
from pix2pixhd_jax.data.transforms import TransformConfig  # noqa: E402


def time_generator(num: int, width: int, height: int, repeats: int = 3) -> float:
    """Median triplets/s of generate_example over `repeats` runs of `num` scenes."""
    synthetic.generate_example(0, 0, width, height)  # warm caches/imports
    rates = []
    for r in range(repeats):
        t = time.perf_counter()
        for i in range(num):
            synthetic.generate_example(r, i, width, height)
        rates.append(num / (time.perf_counter() - t))
    return statistics.median(rates)


def time_pipeline(root: str, *, workers: int, batch_size: int, load_size: int, batches: int) -> float:
    """Batches/s of the grain pipeline over an official-layout folder (after one warm-up batch)."""
    src = folders.OfficialFolderSource(root, "train")
    cfg = TransformConfig(resize_or_crop="scale_width", load_size=load_size, size_divisor=32)
    ds = pipeline.build_dataset(src, batch_size=batch_size, transform=cfg, seed=0, shard_index=0, shard_count=1,
                                worker_count=workers)
    it = iter(ds)
    next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches / (time.perf_counter() - t)
    if hasattr(it, "close"):
        it.close()
    return rate


COLUMNS: tuple[harness.Column, ...] = (
    ("benchmark", lambda r: r["benchmark"]), ("size", lambda r: r["size"]),
    ("workers", lambda r: "-" if r["workers"] is None else f"{r['workers']}"), ("rate", lambda r: f"{r['rate']:.2f}"),
    ("unit", lambda r: r["unit"]))


def main(argv=None) -> list[dict[str, Any]]:
    """Run both measurements, print one line each; returns the rows."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num", type=int, default=40, help="scenes per generator timing run")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--skip_pipeline", action="store_true")
    p.add_argument("--pipeline_width", type=int, default=1024)
    p.add_argument("--pipeline_height", type=int, default=512)
    p.add_argument("--pipeline_examples", type=int, default=16)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="", help="also write the rows as data_speed.json and .md to this folder")
    a = p.parse_args(argv)
    rate = time_generator(a.num, a.width, a.height)
    print(f"synthetic generator {a.width}x{a.height}: {rate:.1f} triplets/s (1 core, median of 3 x {a.num})")
    rows = [{"benchmark": "synthetic_generator", "size": f"{a.width}x{a.height}", "workers": None, "rate": rate,
             "unit": "triplets/s"}]
    if not a.skip_pipeline:
        with tempfile.TemporaryDirectory() as root:
            for i in range(a.pipeline_examples):
                ex = synthetic.generate_example(0, i, a.pipeline_width, a.pipeline_height)
                folders.write_official_example(root, "train", f"{i:06d}", ex)
            for workers in sorted({0, a.workers}):
                rate = time_pipeline(root, workers=workers, batch_size=a.batch_size, load_size=a.pipeline_width,
                                     batches=a.batches)
                print(f"pipeline from PNG folders {a.pipeline_width}x{a.pipeline_height}, batch {a.batch_size}, "
                      f"{workers} workers: {rate:.2f} batches/s")
                rows.append({"benchmark": f"folder_pipeline_batch_{a.batch_size}",
                             "size": f"{a.pipeline_width}x{a.pipeline_height}", "workers": workers, "rate": rate,
                             "unit": "batches/s"})
    if a.out:
        harness.write_results(a.out, "data_speed", rows, harness.markdown_table(rows, COLUMNS))
    return rows


if __name__ == "__main__":
    main()
