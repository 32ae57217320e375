"""One pure training iteration: fake = G(input); G loss and D loss; both gradients from the
pre-update params; both Adam updates.

Taking both gradients before either update gives the official G-step-then-D-step result, since
D's loss only sees the detached fake. One forward of D on the fake serves both losses: the G
gradient is the partial derivative of loss_G in G's params and the D gradient the partial of
loss_D in D's params, read from one vjp with two cotangents (XLA drops the unused halves). So
each step runs D twice (fake, real) where the official code runs it three times.

Beyond the paper, all off by default: DiffAugment on D's inputs (augment.py; one transform per
sample drawn from fold_in(seed, step), shared by label, real and fake), a lazy R1 penalty on the
real input (lazy_r1), and an EMA of G's params updated after G's Adam step (state.g_ema).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from pix2pixhd_jax import augment, losses
from pix2pixhd_jax.models import factory
from pix2pixhd_jax.optim import mask_frozen_trunk, official_lr, with_learning_rate
from pix2pixhd_jax.semantics import encode_input
from pix2pixhd_jax.state import GANState, create_state, ema_decay_at, ema_update

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Networks:
    """The modules of a config (static: hashable, no arrays)."""

    generator: nn.Module
    discriminator: nn.Module
    encoder: Optional[nn.Module]
    vgg: Optional[nn.Module]


def make_networks(config: ml_collections.ConfigDict, vgg: Optional[nn.Module] = None) -> Networks:
    encoder = factory.make_encoder(config.model) if factory.uses_features(config.model) else None
    return Networks(factory.make_generator(config.model), factory.make_discriminator(config.model, config.loss),
                    encoder, vgg)


def _apply(module: nn.Module, params, collections: dict, *args, train: bool):
    """module.apply that returns (output, updated collections); collections untouched in eval."""
    variables = {"params": params, **collections}
    if train and collections:
        out, updates = module.apply(variables, *args, train, mutable=list(collections))
        return out, {**collections, **updates}
    return module.apply(variables, *args, train), collections


def label_encoding(batch: Batch, model_cfg: ml_collections.ConfigDict, dtype) -> jax.Array:
    """One-hot (or RGB) label + edge map: the conditioning shared by G and D."""
    return encode_input(batch["label"], batch.get("inst"), label_nc=model_cfg.label_nc,
                        use_instance=model_cfg.use_instance, dtype=dtype)


def generate(nets: Networks, model_cfg: ml_collections.ConfigDict, g_params, g_collections, batch: Batch,
             label_enc: jax.Array, *, train: bool):
    """fake image in [-1, 1] and updated G (+E) collections."""
    new_collections = dict(g_collections)
    g_in = label_enc
    if nets.encoder is not None:
        # E sees the real image; features are pooled per instance (or per label region).
        pool_ids = batch["label"] if model_cfg.label_feat else batch["inst"]
        feats, new_collections["encoder"] = _apply(nets.encoder, g_params["encoder"], g_collections["encoder"],
                                                   batch["image"], pool_ids, train=train)
        g_in = jnp.concatenate([g_in, feats.astype(g_in.dtype)], axis=-1)
    fake, new_collections["generator"] = _apply(nets.generator, g_params["generator"], g_collections["generator"],
                                                g_in, train=train)
    return fake, new_collections


def make_init_fn(config: ml_collections.ConfigDict, nets: Networks, tx_g: optax.GradientTransformation,
                 tx_d: optax.GradientTransformation, *, height: int, width: int) -> Callable[[jax.Array], GANState]:
    """init(rng) -> fresh GANState for images of height x width (shapes only matter for init)."""
    model_cfg = config.model
    g_nc, d_nc = factory.generator_input_nc(model_cfg), factory.discriminator_input_nc(model_cfg)

    def init(rng: jax.Array) -> GANState:
        rng_g, rng_d, rng_e = jax.random.split(rng, 3)
        g_variables = {"generator": nets.generator.init(rng_g, jnp.zeros((1, height, width, g_nc)))}
        if nets.encoder is not None:
            g_variables["encoder"] = nets.encoder.init(rng_e, jnp.zeros((1, height, width, model_cfg.output_nc)),
                                                       jnp.zeros((1, height, width), jnp.int32))
        d_variables = nets.discriminator.init(rng_d, jnp.zeros((1, height, width, d_nc)))
        return create_state(g_variables, d_variables, tx_g, tx_d, ema=config.optim.get("ema_decay", 0.0) > 0)

    return init


def make_train_step(config: ml_collections.ConfigDict, nets: Networks, tx_g: optax.GradientTransformation,
                    tx_d: optax.GradientTransformation, *, steps_per_epoch: int) -> Callable:
    """Build step(state, batch, vgg_variables) -> (state, metrics); pure, ready for jit."""
    model_cfg, loss_cfg, optim_cfg = config.model, config.loss, config.optim
    dtype = factory.compute_dtype(model_cfg)
    fix_steps = optim_cfg.niter_fix_global * steps_per_epoch if model_cfg.netG == "local" else 0
    use_vgg = not loss_cfg.no_vgg_loss
    if use_vgg and nets.vgg is None:
        raise ValueError("loss.no_vgg_loss is False but no VGG network was given")
    # Beyond the paper (all off by default; .get keeps configs saved before these keys loadable).
    aug_cfg = config.get("augment")
    use_augment = augment.enabled(aug_cfg)
    r1_gamma, r1_every = float(loss_cfg.get("r1_gamma", 0.0)), int(loss_cfg.get("r1_every", 1))
    if r1_gamma > 0 and r1_every < 1:
        raise ValueError(f"loss.r1_every={r1_every} must be >= 1 (the lazy R1 interval in steps)")
    ema_decay, ema_warmup = float(optim_cfg.get("ema_decay", 0.0)), bool(optim_cfg.get("ema_warmup", True))

    def step(state: GANState, batch: Batch, vgg_variables: Any) -> tuple[GANState, dict]:
        real = batch["image"].astype(jnp.float32)
        label_enc = label_encoding(batch, model_cfg, dtype)
        # D's conditioning and real half; with augmentation one transform per sample (seeded by the
        # step, so a resumed run draws the same) goes to label, real and fake alike.
        d_label, d_real, d_aug = label_enc, real, lambda img: img
        if use_augment:
            aug_params = augment.sample_params(jax.random.fold_in(jax.random.PRNGKey(config.seed), state.step),
                                               *real.shape[:3], aug_cfg)
            d_aug = lambda img: augment.apply(img, aug_params, aug_cfg, is_label=False)
            d_label, d_real = augment.apply(label_enc, aug_params, aug_cfg, is_label=True), d_aug(real)

        def objective(g_params, d_params):
            fake, g_collections = generate(nets, model_cfg, g_params, state.g_collections, batch, label_enc,
                                           train=True)
            d_out_fake, d_collections = _apply(nets.discriminator, d_params, state.d_collections,
                                               jnp.concatenate([d_label, d_aug(fake).astype(dtype)], -1), train=True)
            d_out_real, d_collections = _apply(nets.discriminator, d_params, d_collections,
                                               jnp.concatenate([d_label, d_real.astype(dtype)], -1), train=True)
            terms = {
                "D_fake": losses.gan_loss(d_out_fake, target_is_real=False, loss_type=loss_cfg.gan_mode),
                "D_real": losses.gan_loss(d_out_real, target_is_real=True, loss_type=loss_cfg.gan_mode),
                "G_GAN": losses.gan_loss(d_out_fake, target_is_real=True, loss_type=loss_cfg.gan_mode,
                                         for_discriminator=False),
            }
            loss_g = terms["G_GAN"]
            if not loss_cfg.no_ganFeat_loss:
                terms["G_GAN_Feat"] = losses.feature_matching_loss(
                    d_out_fake, d_out_real, n_layers_D=model_cfg.n_layers_D, num_D=model_cfg.num_D,
                    lambda_feat=loss_cfg.lambda_feat)
                loss_g += terms["G_GAN_Feat"]
            if use_vgg:
                terms["G_VGG"] = losses.perceptual_loss(nets.vgg.apply, vgg_variables, fake, real,
                                                        layer_weights=tuple(loss_cfg.vgg_layer_weights),
                                                        lambda_feat=loss_cfg.lambda_feat)
                loss_g += terms["G_VGG"]
            loss_d = 0.5 * (terms["D_fake"] + terms["D_real"])
            return (loss_g, loss_d), (terms, g_collections, d_collections)

        (loss_g, loss_d), vjp_fn, (terms, g_collections, d_collections) = jax.vjp(
            objective, state.g_params, state.d_params, has_aux=True)
        g_grads = vjp_fn((jnp.ones_like(loss_g), jnp.zeros_like(loss_d)))[0]
        d_grads = vjp_fn((jnp.zeros_like(loss_g), jnp.ones_like(loss_d)))[1]
        if r1_gamma > 0:
            r1, r1_grads = lazy_r1(nets.discriminator, state, d_label, d_real, gamma=r1_gamma, every=r1_every,
                                   dtype=dtype)
            d_grads = jax.tree_util.tree_map(jnp.add, d_grads, r1_grads)
            terms = {**terms, "D_R1": r1}

        g_opt_state = state.g_opt_state
        if fix_steps:
            g_grads = mask_frozen_trunk(g_grads, state.step < fix_steps)
            # The official code starts a new Adam over all of G when the fixed phase ends.
            fresh = tx_g.init(state.g_params)
            g_opt_state = jax.tree_util.tree_map(lambda new, old: jnp.where(state.step == fix_steps, new, old),
                                                 fresh, g_opt_state)
        lr_g = official_lr(state.step, lr=optim_cfg.lr_G, niter=optim_cfg.niter, niter_decay=optim_cfg.niter_decay,
                           steps_per_epoch=steps_per_epoch)
        lr_d = official_lr(state.step, lr=optim_cfg.lr_D, niter=optim_cfg.niter, niter_decay=optim_cfg.niter_decay,
                           steps_per_epoch=steps_per_epoch)
        g_updates, g_opt_state = tx_g.update(g_grads, with_learning_rate(g_opt_state, lr_g), state.g_params)
        d_updates, d_opt_state = tx_d.update(d_grads, with_learning_rate(state.d_opt_state, lr_d), state.d_params)
        g_params = optax.apply_updates(state.g_params, g_updates)
        g_ema = state.g_ema
        if g_ema is not None:
            g_ema = ema_update(g_ema, g_params, ema_decay_at(state.step, ema_decay, ema_warmup))
        new_state = state.replace(
            step=state.step + 1,
            g_params=g_params, g_opt_state=g_opt_state,
            g_collections=g_collections,
            d_params=optax.apply_updates(state.d_params, d_updates), d_opt_state=d_opt_state,
            d_collections=d_collections, g_ema=g_ema,
        )
        metrics = {**terms, "loss_G": loss_g, "loss_D": loss_d, "lr_G": lr_g, "lr_D": lr_d,
                   "grad_norm_G": optax.global_norm(g_grads), "grad_norm_D": optax.global_norm(d_grads)}
        return new_state, metrics

    return step


def lazy_r1(discriminator: nn.Module, state: GANState, d_label: jax.Array, d_real: jax.Array, *, gamma: float,
            every: int, dtype) -> tuple[jax.Array, Any]:
    """(R1 penalty, its D gradient x `every`) on every `every`-th step, zeros on the others.

    Lazy regularisation (StyleGAN2): the penalty runs every k-th step with weight k, so its average
    pull equals the every-step penalty's at 1/k of the double-backward cost. It runs on the steps
    that end at multiples of k in the 1-based count the logs use (state.step = k-1, 2k-1, ...), so
    the logged D_R1 shows it whenever log_every is a multiple of k. D runs in train mode from the
    step's starting collections; its collection updates are dropped.
    """
    def penalty(d_params):
        d_fn = lambda img: _apply(discriminator, d_params, state.d_collections,
                                  jnp.concatenate([d_label, img.astype(dtype)], -1), train=True)[0]
        return losses.r1_penalty(d_fn, d_real, gamma=gamma)

    def run(d_params):
        value, grads = jax.value_and_grad(penalty)(d_params)
        return value, jax.tree_util.tree_map(lambda g: every * g, grads)

    def skip(d_params):
        return jnp.float32(0.0), jax.tree_util.tree_map(jnp.zeros_like, d_params)

    return jax.lax.cond((state.step + 1) % every == 0, run, skip, state.d_params)


def make_generate_fn(config: ml_collections.ConfigDict, nets: Networks) -> Callable:
    """sample(g_params, g_collections, batch) -> fake images in [-1, 1] (eval mode), ready for jit."""
    dtype = factory.compute_dtype(config.model)

    def sample(g_params, g_collections, batch: Batch) -> jax.Array:
        label_enc = label_encoding(batch, config.model, dtype)
        fake, _ = generate(nets, config.model, g_params, g_collections, batch, label_enc, train=False)
        return fake

    return sample
