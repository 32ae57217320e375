"""Benchmark: label2city_512p at full size, global G at 1024x512, num_D 2, batch 1."""
from pix2pixhd_jax.configs import bench_512x256, default


def get_config():
    config = default.get_config()
    config.data.batch_size = 1
    config.bench = bench_512x256.bench_section(height=512, width=1024, steps=3)
    return config
