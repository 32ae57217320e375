"""Benchmark: label2city_1024p, local enhancer (ngf 32, trunk 64) at 2048x1024, num_D 3, batch 1."""
from pix2pixhd_jax.configs import bench_512x256, default


def get_config():
    config = default.get_config()
    config.model.netG, config.model.ngf, config.model.num_D = "local", 32, 3
    config.data.batch_size = 1
    config.bench = bench_512x256.bench_section(height=1024, width=2048, steps=2)
    return config
