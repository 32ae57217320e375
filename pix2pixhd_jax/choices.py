"""The allowed values of the config's string options, written once.

run_config.validate checks a config against these before anything runs, and the modules that act
on a value (models, losses, augment) refuse anything else with the same lists.
"""

GENERATORS = ("global", "local")  # model.netG: G1 alone, or G1 + local enhancers
NORMS = ("instance", "batch", "none")  # model.norm
COMPUTE_DTYPES = ("float32", "bfloat16")  # model.compute_dtype
CONV_IMPLS = ("auto", "rewrite", "lax")  # model.conv_impl
UPSAMPLE_LAYERS = ("transpose", "resize_conv", "bilinear_conv", "subpixel_icnr")  # model.upsample_layer
UPSAMPLE_IMPLS = ("tapwise", "subpixel", "xla")  # model.upsample_impl: forms of the transposed conv
ATTENTION_FORMS = ("full", "pooled", "window")  # model.attention_form
GAN_LOSSES = ("lsgan", "vanilla", "hinge")  # loss.gan_mode
LATTICE_REFERENCES = ("real", "neighbours")  # loss.lattice_reference: what a lattice bin's power is compared with
LATTICE_SIDES = ("above", "both")  # loss.lattice_sides: the 'neighbours' penalty on a grid only, or on a notch too
AUGMENT_OPS = ("color", "translation", "cutout")  # the comma list augment.policy
