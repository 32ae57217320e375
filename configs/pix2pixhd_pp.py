"""pix2pixHD++: the official networks with a modern GAN training recipe (beyond the paper).

Built on configs/synthetic_demo.py (CPU-sized synthetic street scenes). Every piece is one config
key, so each can be switched off or on alone:

  hinge loss               loss.gan_mode='hinge'                       (official: 'lsgan')
  spectral norm on D       model.spectral_norm_D=True                  (G: model.spectral_norm_G)
  TTUR                     optim.lr_G=1e-4, optim.lr_D=4e-4, beta1 0, beta2 0.9 for both
  EMA of G's weights       optim.ema_decay=0.999 (samples, evaluation, inference, export use it)
Optional extras, named in the config argument (comma list):
  r1     lazy R1 on real images: loss.r1_gamma, loss.r1_every
  attn   self-attention in D at the finest scale: model.d_attention_scales=(0,)
  gattn  self-attention in G's bottleneck: model.g_attention=True
  sn_g   spectral norm on G as well
  aug    DiffAugment on D's inputs: augment.policy='color,translation,cutout'

  python -m pix2pixhd_jax.main --config=configs/pix2pixhd_pp.py --workdir=runs/pp
  python -m pix2pixhd_jax.main --config=configs/pix2pixhd_pp.py:attn,r1 --workdir=runs/pp_attn_r1
  python -m pix2pixhd_jax.main --config=configs/pix2pixhd_pp.py --workdir=runs/pp_nohinge --config.loss.gan_mode=lsgan
"""
import ml_collections

from pix2pixhd_jax.configs import synthetic_demo

EXTRAS = ("r1", "attn", "gattn", "sn_g", "aug")


def apply_recipe(config: ml_collections.ConfigDict, extras: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """Switch the recipe on in any config (in place; also used by the tests on the tiny config)."""
    bad = [e for e in extras if e not in EXTRAS]
    if bad:
        raise ValueError(f"configs/pix2pixhd_pp.py: unknown extras {bad}; choose from {EXTRAS}")
    m, l, o = config.model, config.loss, config.optim
    l.gan_mode = "hinge"
    m.spectral_norm_D = True
    o.lr_G, o.lr_D = 1e-4, 4e-4
    o.beta1_G = o.beta1_D = 0.0
    o.beta2_G = o.beta2_D = 0.9
    o.ema_decay = 0.999
    if "r1" in extras:
        l.r1_gamma = 10.0  # untuned; with patch-mean scores the penalty is small (README: beyond the paper)
        l.r1_every = 16
    if "attn" in extras:
        m.d_attention_scales = (0,)
    if "gattn" in extras:
        m.g_attention = True
    if "sn_g" in extras:
        m.spectral_norm_G = True
    if "aug" in extras:
        config.augment.policy = "color,translation,cutout"
    return config


def get_config(arg: str = ""):
    config = synthetic_demo.get_config()
    # The official networks and losses: the demo's noise inputs and lattice penalty stay off.
    config.model.noise_inputs, config.loss.lambda_lattice = False, 0.0
    return apply_recipe(config, tuple(e.strip() for e in arg.split(",") if e.strip()))
