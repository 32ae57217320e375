"""Official label2city_1024p recipe: local enhancer at 2048x1024 (ngf 32, num_D 3), trunk initialised
from the 512p run and held fixed for the first niter_fix_global epochs.

    python -m pix2pixhd_jax.main --config=configs/label2city_1024p.py --workdir=runs/label2city_1024p \
        --config.train.init_from=runs/label2city_512p --config.data.dataroot=/data/cityscapes \
        --config.loss.vgg_weights=/weights/vgg19.pth
"""
from pix2pixhd_jax.configs import label2city_512p


def get_config():
    config = label2city_512p.get_config()
    config.model.netG, config.model.ngf, config.model.num_D = "local", 32, 3
    config.data.loadSize = 2048
    config.optim.niter, config.optim.niter_decay, config.optim.niter_fix_global = 50, 50, 10
    config.train.init_from = ""  # set to the 512p workdir (its G1 becomes the trunk, its D scales 0-1 carry over)
    return config
