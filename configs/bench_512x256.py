"""Benchmark: the issue's CPU target, a train step at 512x256, batch 1.

Global G (ngf 64, 4 downsamples, 9 blocks), num_D 2, n_layers_D 3, ndf 64, LSGAN + feature
matching + VGG19 loss, Adam: the label2city defaults. Benchmarks give VGG19 random weights
(same FLOPs as ImageNet's), so no weight file is needed.
"""
import ml_collections

from pix2pixhd_jax.configs import default


def bench_section(*, height: int, width: int, steps: int) -> ml_collections.ConfigDict:
    """Fields read by benchmarks/run.py."""
    b = ml_collections.ConfigDict()
    b.height, b.width = height, width  # image size of the benchmarked step and G forward
    b.warmup = 1  # untimed steps after compilation
    b.steps = steps  # timed train steps (median reported)
    b.infer_steps = steps  # timed G forward passes (median reported)
    b.dtypes = ("float32", "bfloat16")  # model.compute_dtype variants
    b.remat = (False, True)  # model.remat_blocks variants
    return b


def get_config():
    config = default.get_config()
    config.data.batch_size = 1
    config.bench = bench_section(height=256, width=512, steps=5)
    return config
