"""Optimizers for G (+E) and D: Adam with the official epoch-wise constant-then-linear-decay lr."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def official_lr(step: jax.Array, *, lr: float, niter: int, niter_decay: int, steps_per_epoch: int) -> jax.Array:
    """lr at a 0-based step: lr0 * (1 - max(0, epoch - niter - 1) / niter_decay), epoch 1-based.

    The official loop lowers lr by lr0/niter_decay after every epoch e > niter, so epochs
    1..niter+1 run at lr0 and the last (niter+niter_decay) at lr0/niter_decay.
    """
    epoch = step // steps_per_epoch + 1
    if niter_decay <= 0:
        return jnp.full_like(epoch, lr, dtype=jnp.float32)
    frac = jnp.maximum(0, epoch - niter - 1) / niter_decay
    return (lr * jnp.clip(1.0 - frac, 0.0, 1.0)).astype(jnp.float32)


def make_optimizers(optim_cfg: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation,
                                                                   optax.GradientTransformation]:
    """(G optimizer, D optimizer): Adam with its own betas each and an injected learning rate.

    The lr lives in the optimizer state (inject_hyperparams) and is set by the train step from the
    global step, so that re-initialising G's Adam at the end of niter_fix_global (the official
    "new optimizer over all params") restarts the moments but not the lr schedule.
    """
    tx_g = optax.inject_hyperparams(optax.adam)(learning_rate=optim_cfg.lr_G, b1=optim_cfg.beta1_G,
                                                b2=optim_cfg.beta2_G, eps=optim_cfg.eps)
    tx_d = optax.inject_hyperparams(optax.adam)(learning_rate=optim_cfg.lr_D, b1=optim_cfg.beta1_D,
                                                b2=optim_cfg.beta2_D, eps=optim_cfg.eps)
    return tx_g, tx_d


def with_learning_rate(opt_state, lr: jax.Array):
    """Return an inject_hyperparams state with its learning rate replaced."""
    hyperparams = dict(opt_state.hyperparams)
    hyperparams["learning_rate"] = jnp.asarray(lr, hyperparams["learning_rate"].dtype)
    return opt_state._replace(hyperparams=hyperparams)


def mask_frozen_trunk(g_grads: dict, frozen: jax.Array) -> dict:
    """Zero the gradients of all but the finest local enhancer while `frozen` (niter_fix_global).

    As the official code, which then optimises only `model{n_local_enhancers}` (and E): with one
    enhancer the global trunk is frozen, with two (G3) the trunk and the first enhancer `enh1_*`.
    The final output conv belongs to the finest enhancer and trains. With zero gradients and zero
    Adam moments a frozen update is exactly zero, which is what the official code gets by leaving
    those params out of the optimizer; the optimizer state keeps one shape through all phases, so
    every checkpoint restores.
    """
    generator = g_grads["generator"]
    if "global_trunk" not in generator:
        return g_grads
    finest = max(int(k[3:].split("_")[0]) for k in generator if k.startswith("enh"))
    is_frozen = lambda name: name == "global_trunk" or (name.startswith("enh") and int(name[3:].split("_")[0]) < finest)
    zero = lambda tree: jax.tree_util.tree_map(lambda g: jnp.where(frozen, jnp.zeros_like(g), g), tree)
    return {**g_grads, "generator": {k: zero(v) if is_frozen(k) else v for k, v in generator.items()}}
