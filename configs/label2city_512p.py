"""Official label2city_512p recipe: global G at 1024x512 (Cityscapes scaled to width 1024), num_D 2.

    python -m pix2pixhd_jax.main --config=configs/label2city_512p.py --workdir=runs/label2city_512p \
        --config.data.dataroot=/data/cityscapes --config.loss.vgg_weights=/weights/vgg19.pth
"""
from pix2pixhd_jax.configs import default


def get_config():
    config = default.get_config()
    config.data.source = "cityscapes"  # native gtFine/leftImg8bit layout; 'folder' for train_label/...
    config.data.dataroot = "./datasets/cityscapes/"
    config.data.resize_or_crop, config.data.loadSize = "scale_width", 1024
    config.loss.vgg_backbone = "vgg19"
    config.loss.vgg_weights = "./weights/vgg19.pth"  # torchvision state dict or .npz; never downloaded
    config.optim.niter, config.optim.niter_decay = 100, 100
    return config
