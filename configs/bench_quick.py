"""Benchmark smoke run (CI, --quick): the full code path at toy widths and 64x32 images."""
from pix2pixhd_jax.configs import bench_512x256, default


def get_config():
    config = default.get_config()
    m, loss = config.model, config.loss
    m.ngf, m.n_downsample_global, m.n_blocks_global = 8, 2, 1
    m.ndf, m.n_layers_D, m.num_D = 8, 2, 2
    loss.vgg_layers = ("relu1_1", "relu2_1")
    loss.vgg_layer_weights = (1.0 / 32, 1.0 / 16)
    config.data.batch_size = 1
    config.bench = bench_512x256.bench_section(height=32, width=64, steps=2)
    config.bench.dtypes = ("float32",)
    config.bench.remat = (False,)
    return config
