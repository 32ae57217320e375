"""Coarse-to-fine staging: start a local-enhancer run from a finished global-generator run.

Stage 1 trains G1 alone at half resolution; stage 2 (`train.init_from`) copies G1 into the local
enhancer's trunk, D scales by name and E, and initialises the rest fresh.
"""
from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import ml_collections
from flax import traverse_util

from pix2pixhd_jax import checkpointing, sharding
from pix2pixhd_jax.models import factory
from pix2pixhd_jax.state import GANState
from pix2pixhd_jax.train_step import build_program

log = logging.getLogger(__name__)


def transfer_from_stage1(state: GANState, stage1: GANState) -> tuple[GANState, list[str], list[str]]:
    """Copy a stage-1 (global G) state into a local-enhancer state: G1 -> trunk, D scales by name, E.

    Returns (state, copied leaf paths, freshly initialised leaf paths). Official naming puts
    scale{i} at the same absolute resolution in both pyramids, so scales map by name.
    """
    def has_trunk(g_params) -> bool:
        return any(k[:2] == ("generator", "global_trunk") for k in traverse_util.flatten_dict(g_params))

    # A global stage 1 (G1) lands in the trunk, its final out conv finding no partner; a local stage 1
    # (the 1024p run under G3) keeps its names: trunk to trunk, enh1 to enh1.
    into_trunk = has_trunk(state.g_params) and not has_trunk(stage1.g_params)

    def remap_g(path: tuple) -> tuple:
        return ("generator", "global_trunk") + path[1:] if into_trunk and path[0] == "generator" else path

    copied, fresh = [], []

    def merge(dst_tree, src_tree, remap=lambda p: p):
        dst, src = traverse_util.flatten_dict(dst_tree), traverse_util.flatten_dict(src_tree)
        src = {remap(k): v for k, v in src.items()}
        out = {}
        for k, v in dst.items():
            if k in src and src[k].shape == v.shape:
                out[k] = src[k]
                copied.append("/".join(k))
            else:
                out[k] = v
                fresh.append("/".join(k))
        return traverse_util.unflatten_dict(out)

    new = state.replace(g_params=merge(state.g_params, stage1.g_params, remap_g),
                        d_params=merge(state.d_params, stage1.d_params))
    if new.g_ema is not None:  # the average starts from the transferred weights
        new = new.replace(g_ema=jax.tree_util.tree_map(jnp.copy, new.g_params))
    return new, copied, fresh


def load_stage1(init_from: str, mesh, config: ml_collections.ConfigDict) -> GANState:
    """Restore the latest state of another workdir with that run's own saved config.

    Keys the stage-1 run's config predates take this run's values (`config`).
    """
    manager = checkpointing.make_manager(init_from, max_to_keep=1, async_save=False)
    if manager.latest_step() is None:
        raise FileNotFoundError(f"train.init_from={init_from!r} holds no checkpoint")
    cfg1 = checkpointing.restore_config(manager, defaults=config)
    h = w = factory.downsample_factor(cfg1.model) * 2  # params do not depend on the image size
    program = build_program(cfg1, height=h, width=w, steps_per_epoch=1)
    abstract = jax.eval_shape(program.init, jax.random.PRNGKey(0))
    target = checkpointing.abstract_with_sharding(abstract, sharding.state_shardings(abstract, mesh))
    state, _ = checkpointing.restore(manager, target)
    manager.close()
    return state




def init_from_stage1(state: GANState, init_from: str, mesh, config: ml_collections.ConfigDict) -> GANState:
    """`state` with stage 1's G1, D scales and E copied in; refuses a stage-1 run that shares no G array."""
    state, copied, fresh = transfer_from_stage1(state, load_stage1(init_from, mesh, config))
    if not any(p.startswith("generator/") for p in copied):
        raise ValueError(
            f"train.init_from={init_from!r} shares no generator array with this config; a local "
            "enhancer's trunk has width ngf * 2**n_local_enhancers, so set model.ngf to the stage-1 ngf "
            "divided by 2**n_local_enhancers (official: 64 -> 32), and keep n_downsample/n_blocks_global")
    log.info("init_from %s: copied %d arrays, %d start fresh: %s", init_from, len(copied), len(fresh),
             ", ".join(sorted({"/".join(p.split("/")[:2]) for p in fresh})))
    return state
