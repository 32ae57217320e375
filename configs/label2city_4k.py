"""The paper's G3: two local enhancers at 4096x2048, started from the label2city_1024p run.

The trunk (G1, width 64) and the first enhancer (width 32) come from the 1024p run through
`train.init_from` (staging.py: same names and shapes, so both copy over; the new finest enhancer
and the final output conv start fresh). For niter_fix_global epochs only the new finest enhancer
trains, as in the official code, which optimises only `model{n_local_enhancers}` then.

One image of 4096x2048 does not fit one accelerator: its height is split over the 8 devices of one
host (mesh.space; README, "Pods and memory": planned 10.2 GiB per device in bfloat16 with remat,
7.1 GiB over 16), e.g. an 8-GPU node or an 8-chip TPU host:

    python -m pix2pixhd_jax.main --config=configs/label2city_4k.py --workdir=gs://bucket/runs/label2city_4k \
        --config.train.init_from=gs://bucket/runs/label2city_1024p --config.data.dataroot=/data/cityscapes_4k \
        --config.loss.vgg_weights=/weights/vgg19.pth
"""
from pix2pixhd_jax.configs import label2city_1024p


def get_config():
    config = label2city_1024p.get_config()
    config.model.n_local_enhancers = 2
    config.model.ngf = 16  # enhancer widths 16 (new, finest) and 32 (the 1024p enhancer); trunk 16 * 2**2 = 64
    config.model.compute_dtype, config.model.remat_blocks = "bfloat16", True
    config.data.loadSize = 4096  # scale_width: 4096x2048 frames
    config.optim.niter, config.optim.niter_decay = 50, 50
    config.optim.niter_fix_global = 10  # epochs training only the new enhancer (+E) on the transferred trunk
    config.mesh.space = 8  # 2048 rows over one host's 8 devices (G's 1/64 level: 4 rows per device)
    config.train.init_from = ""  # set to the 1024p workdir
    return config
