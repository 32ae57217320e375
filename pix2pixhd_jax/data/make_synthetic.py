"""Write N synthetic street scenes to disk in pix2pixHD's official folder layout.

  python -m pix2pixhd_jax.data.make_synthetic --out datasets/synthetic --num 1000 \
      --width 512 --height 256 --seed 0 [--phase train] [--start 0] [--jobs 2]

writes {out}/{phase}_label/NNNNNN.png (8-bit ids), {phase}_inst/NNNNNN.png (16-bit ids),
{phase}_img/NNNNNN.png (RGB) and {phase}_meta/NNNNNN.json (each instance's drawn appearance).
Example i is scene (seed, start + i): a test split is another --seed or a disjoint --start.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
from typing import Sequence

from tqdm import tqdm

from pix2pixhd_jax.data import folders, synthetic


def _write_one(args: tuple[str, str, int, int, int, int]) -> int:
    """Generate and write scene `index` (a top-level function so worker processes can run it)."""
    out, phase, seed, index, width, height = args
    ex = synthetic.generate_example(seed, index, width, height)
    folders.write_official_example(out, phase, f"{index:06d}", ex)
    return index


def write_dataset(out: str, num: int, *, width: int, height: int, seed: int, phase: str = "train",
                  start: int = 0, jobs: int = 1) -> None:
    """Write scenes start..start+num-1 of `seed` under `out`, with a progress bar."""
    if num <= 0:
        raise ValueError(f"--num must be positive, got {num}")
    os.makedirs(out, exist_ok=True)
    tasks = [(out, phase, seed, i, width, height) for i in range(start, start + num)]
    bar = tqdm(total=num, desc=f"synthetic {phase} {width}x{height}", unit="scene")
    if jobs <= 1:
        for t in tasks:
            _write_one(t)
            bar.update()
    else:
        with multiprocessing.Pool(jobs) as pool:
            for _ in pool.imap_unordered(_write_one, tasks, chunksize=4):
                bar.update()
    bar.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and write the dataset."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="dataset root (dataroot)")
    p.add_argument("--num", type=int, required=True, help="number of scenes")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--phase", default="train", help="folder prefix: train, test, ...")
    p.add_argument("--start", type=int, default=0, help="index of the first scene")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    a = p.parse_args(argv)
    write_dataset(a.out, a.num, width=a.width, height=a.height, seed=a.seed, phase=a.phase, start=a.start, jobs=a.jobs)


if __name__ == "__main__":
    main()
