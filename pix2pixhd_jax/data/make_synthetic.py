"""Write N synthetic street scenes to disk in pix2pixHD's official folder layout.

  python -m pix2pixhd_jax.cli.make_synthetic --out datasets/synthetic --num 1000 \
      --width 512 --height 256 --seed 0 [--phase train] [--start 0] [--jobs 2]

writes {out}/{phase}_label/NNNNNN.png (8-bit ids), {phase}_inst/NNNNNN.png (16-bit ids),
{phase}_img/NNNNNN.png (RGB) and {phase}_meta/NNNNNN.json (each instance's drawn appearance).
Example i is scene (seed, start + i): a test split is another --seed or a disjoint --start.
"""
from __future__ import annotations

import multiprocessing

from tqdm import tqdm

from pix2pixhd_jax import storage
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
    storage.makedirs(out)  # a gs:// URL needs no folders
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
