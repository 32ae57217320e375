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
from pix2pixhd_jax.optim import make_optimizers, mask_frozen_trunk, official_lr, with_learning_rate
from pix2pixhd_jax.state import GANState, create_state, ema_decay_at, ema_update

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Program:
    """What training a config needs, built once: networks, both optimizers, init(rng) and the pure step."""

    nets: factory.Networks
    tx_g: optax.GradientTransformation
    tx_d: optax.GradientTransformation
    init: Callable[[jax.Array], GANState]
    step: Callable


def build_program(config: ml_collections.ConfigDict, vgg: Optional[nn.Module] = None, *, height: int, width: int,
                  steps_per_epoch: int) -> Program:
    """Networks from the factory, optimizers from optim, init and step for images of height x width."""
    nets = factory.build(config, vgg)
    tx_g, tx_d = make_optimizers(config.optim)
    return Program(nets, tx_g, tx_d, make_init_fn(config, nets, tx_g, tx_d, height=height, width=width),
                   make_train_step(config, nets, tx_g, tx_d, steps_per_epoch=steps_per_epoch))


def make_init_fn(config: ml_collections.ConfigDict, nets: factory.Networks, tx_g: optax.GradientTransformation,
                 tx_d: optax.GradientTransformation, *, height: int, width: int) -> Callable[[jax.Array], GANState]:
    """init(rng) -> fresh GANState for images of height x width (shapes only matter for init)."""

    def init(rng: jax.Array) -> GANState:
        rng_g, rng_d, rng_e = jax.random.split(rng, 3)
        g_variables = factory.init_generator_variables(nets, config.model, rng_g, rng_e, height=height, width=width)
        d_variables = factory.init_discriminator_variables(nets, config.model, rng_d, height=height, width=width)
        return create_state(g_variables, d_variables, tx_g, tx_d, ema=config.optim.ema_decay > 0)

    return init


def make_train_step(config: ml_collections.ConfigDict, nets: factory.Networks, tx_g: optax.GradientTransformation,
                    tx_d: optax.GradientTransformation, *, steps_per_epoch: int) -> Callable:
    """Build step(state, batch, vgg_variables) -> (state, metrics); pure, ready for jit."""
    model_cfg, optim_cfg = config.model, config.optim
    loss_cfg = losses.LossOptions.from_config(config.loss)
    dtype = factory.compute_dtype(model_cfg)
    fix_steps = optim_cfg.niter_fix_global * steps_per_epoch if model_cfg.netG == "local" else 0
    use_vgg = not loss_cfg.no_vgg_loss
    # Beyond the paper, all off by default.
    aug_cfg = augment.AugmentOptions.from_config(config.augment)
    use_augment = aug_cfg.enabled
    r1_gamma, r1_every = loss_cfg.r1_gamma, loss_cfg.r1_every
    if r1_gamma > 0 and r1_every < 1:
        raise ValueError(f"loss.r1_every={r1_every} must be >= 1 (the lazy R1 interval in steps)")
    ema_decay, ema_warmup = float(optim_cfg.ema_decay), bool(optim_cfg.ema_warmup)

    def step(state: GANState, batch: Batch, vgg_variables: Any) -> tuple[GANState, dict]:
        if use_vgg and nets.vgg is None:  # checked when traced, so shape-only uses need no VGG
            raise ValueError("loss.no_vgg_loss is False but no VGG network was given")
        real = batch["image"].astype(jnp.float32)
        label_enc = factory.label_encoding(batch, model_cfg)
        # D's conditioning and real half; with augmentation one transform per sample (seeded by the
        # step, so a resumed run draws the same) goes to label, real and fake alike.
        d_label, d_real, d_aug = label_enc, real, lambda img: img
        step_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), state.step)
        # G's noise inputs (model.noise_inputs) draw from their own stream, also seeded by the step.
        noise_rng = jax.random.fold_in(step_key, 1) if model_cfg.noise_inputs else None
        if use_augment:
            aug_params = augment.sample_params(step_key, *real.shape[:3], aug_cfg)
            d_aug = lambda img: augment.apply(img, aug_params, aug_cfg, is_label=False)
            d_label, d_real = augment.apply(label_enc, aug_params, aug_cfg, is_label=True), d_aug(real)

        def objective(g_params, d_params):
            # E's pooled map and the regions it pools over also feed the colour losses.
            features, regions, g_collections = None, None, dict(state.g_collections)
            if nets.encoder is not None:
                regions = factory.pool_ids(model_cfg, batch["label"], batch.get("inst"))
                features, g_collections["encoder"] = factory.encode(
                    nets, g_params, state.g_collections, batch["image"], regions, train=True)
            fake, g_collections = factory.generate(nets, model_cfg, g_params, g_collections, batch, label_enc,
                                                   train=True, features=features, noise_rng=noise_rng)
            d_out_fake, d_collections = factory.apply(
                nets.discriminator, d_params, state.d_collections,
                jnp.concatenate([d_label, d_aug(fake).astype(dtype)], -1), train=True)
            d_out_real, d_collections = factory.apply(nets.discriminator, d_params, d_collections,
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
                                                        layer_weights=loss_cfg.vgg_layer_weights,
                                                        lambda_feat=loss_cfg.lambda_feat)
                loss_g += terms["G_VGG"]
            if loss_cfg.lambda_l1 > 0:
                terms["G_L1"] = losses.pixel_l1_loss(fake, real, weight=loss_cfg.lambda_l1)
                loss_g += terms["G_L1"]
            if loss_cfg.lambda_lattice > 0:
                if loss_cfg.lattice_reference == "neighbours":
                    terms["G_lattice"] = losses.lattice_neighbour_loss(
                        fake, period=loss_cfg.lattice_period, weight=loss_cfg.lambda_lattice,
                        margin=loss_cfg.lattice_margin, sides=loss_cfg.lattice_sides)
                else:
                    terms["G_lattice"] = losses.lattice_loss(fake, real, period=loss_cfg.lattice_period,
                                                             weight=loss_cfg.lambda_lattice)
                loss_g += terms["G_lattice"]
            if loss_cfg.lambda_region_colour > 0:
                terms["G_region_colour"] = losses.region_colour_loss(fake, real, regions,
                                                                     weight=loss_cfg.lambda_region_colour)
                loss_g += terms["G_region_colour"]
            if loss_cfg.lambda_feature_colour > 0:
                terms["E_feature_colour"] = losses.feature_colour_loss(features, real, regions,
                                                                       weight=loss_cfg.lambda_feature_colour)
                loss_g += terms["E_feature_colour"]
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
        d_fn = lambda img: factory.apply(discriminator, d_params, state.d_collections,
                                         jnp.concatenate([d_label, img.astype(dtype)], -1), train=True)[0]
        return losses.r1_penalty(d_fn, d_real, gamma=gamma)

    def run(d_params):
        value, grads = jax.value_and_grad(penalty)(d_params)
        return value, jax.tree_util.tree_map(lambda g: every * g, grads)

    def skip(d_params):
        return jnp.float32(0.0), jax.tree_util.tree_map(jnp.zeros_like, d_params)

    return jax.lax.cond((state.step + 1) % every == 0, run, skip, state.d_params)
