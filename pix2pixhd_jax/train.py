"""run(config, workdir): mesh, data, state, checkpoints, the loop, samples and logs."""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util
from tensorboardX import SummaryWriter
from tqdm import tqdm

from pix2pixhd_jax import checkpointing, sharding
from pix2pixhd_jax.data import pipeline, sources, transforms
from pix2pixhd_jax.models import factory
from pix2pixhd_jax.models.vgg import load_vgg
from pix2pixhd_jax.optim import make_optimizers
from pix2pixhd_jax.semantics import check_labels
from pix2pixhd_jax.state import GANState, inference_params
from pix2pixhd_jax.train_step import make_generate_fn, make_init_fn, make_networks, make_train_step
from pix2pixhd_jax import visualize

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- data
def transform_config(config: ml_collections.ConfigDict) -> transforms.TransformConfig:
    d, m = config.data, config.model
    return transforms.TransformConfig(
        resize_or_crop=d.resize_or_crop, load_size=d.loadSize, fine_size=d.fineSize, no_flip=d.no_flip,
        size_divisor=factory.downsample_factor(m), label_nc=m.label_nc)


def make_source(config: ml_collections.ConfigDict, split: str, num_examples: int, seed: int,
                load_image: bool | None = True):
    d, m = config.data, config.model
    return sources.make_source(
        d.source, split=split, label_nc=m.label_nc, use_instance=m.use_instance, load_image=load_image,
        dataroot=d.dataroot,
        max_dataset_size=d.max_dataset_size or None, num_examples=num_examples, width=d.synthetic_width,
        height=d.synthetic_height, seed=seed, tfds_name=d.tfds_name, tfds_data_dir=d.tfds_data_dir or None)


def example_size(source, tcfg: transforms.TransformConfig) -> tuple[int, int]:
    """(height, width) of transformed examples, from the first example's native size."""
    first = source[0]
    h, w = first["label"].shape[:2]
    out_w, out_h = transforms.output_size(w, h, tcfg)
    return out_h, out_w


def holdout_batch(config: ml_collections.ConfigDict, tcfg: transforms.TransformConfig,
                  train_source) -> dict[str, np.ndarray]:
    """A fixed batch for sample grids and the held-out L1 (the sample split, or unseen synthetic scenes).

    Without a readable sample split the first training examples are shown instead (then the L1
    is not held out; the log says so).
    """
    d = config.data
    n = config.train.num_samples
    if d.source == "synthetic":
        source = make_source(config, "test", n, d.synthetic_seed + 10_000)
    else:
        try:
            source = make_source(config, d.sample_split, 0, 0)
        except (OSError, ValueError) as e:
            log.warning("no sample split %r (%s); sample grids show training examples", d.sample_split, e)
            source = train_source
    examples = [transforms.transform_example(source[i], tcfg, None, train=False) for i in range(min(n, len(source)))]
    return {k: np.stack([e[k] for e in examples]) for k in examples[0] if k != "meta"}


# ------------------------------------------------------------------------------ stage transfer
def transfer_from_stage1(state: GANState, stage1: GANState) -> tuple[GANState, list[str], list[str]]:
    """Copy a stage-1 (global G) state into a local-enhancer state: G1 -> trunk, D scales by name, E.

    Returns (state, copied leaf paths, freshly initialised leaf paths). Official naming puts
    scale{i} at the same absolute resolution in both pyramids, so scales map by name.
    """
    has_trunk = any(k[:2] == ("generator", "global_trunk") for k in traverse_util.flatten_dict(state.g_params))

    def remap_g(path: tuple) -> tuple:
        # Stage-1 G1 params land in the trunk; its final out conv finds no partner and is dropped.
        return ("generator", "global_trunk") + path[1:] if has_trunk and path[0] == "generator" else path

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


def load_stage1(init_from: str, mesh) -> GANState:
    """Restore the latest state of another workdir with that run's own saved config."""
    manager = checkpointing.make_manager(init_from, max_to_keep=1, async_save=False)
    if manager.latest_step() is None:
        raise FileNotFoundError(f"train.init_from={init_from!r} holds no checkpoint")
    cfg1 = checkpointing.restore_config(manager)
    nets1 = make_networks(cfg1)
    tx_g, tx_d = make_optimizers(cfg1.optim)
    h = w = factory.downsample_factor(cfg1.model) * 2
    abstract = jax.eval_shape(make_init_fn(cfg1, nets1, tx_g, tx_d, height=h, width=w), jax.random.PRNGKey(0))
    target = checkpointing.abstract_with_sharding(abstract, sharding.state_shardings(abstract, mesh))
    state, _ = checkpointing.restore(manager, target)
    manager.close()
    return state


# ------------------------------------------------------------------------------------- logging
class MetricWriter:
    """Scalars as one JSON line per logged step and as TensorBoard events (process 0 only)."""

    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard")) if self.enabled else None

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
            for k, v in scalars.items():
                self.tensorboard.add_scalar(k, float(v), step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def make_evaluator(config: ml_collections.ConfigDict):
    """evaluate.make_periodic_eval when config.eval.every_steps > 0, else None (nothing is loaded)."""
    if "eval" not in config or not config.eval.every_steps:
        return None
    from pix2pixhd_jax import evaluate  # segmenter, LPIPS, Inception: only when asked for

    return evaluate.make_periodic_eval(config)


def check_finite(step: int, metrics: dict[str, float], last_saved: Optional[int]) -> None:
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(
            f"non-finite losses at step {step}: {bad}. The last good checkpoint is step {last_saved}. "
            "Common causes: a label id >= label_nc (NaN one-hot), too high a learning rate, or bf16 overflow.")


# ------------------------------------------------------------------------------------------ run
def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train according to `config`, writing checkpoints, metrics and samples under `workdir`."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    t_cfg, d_cfg = config.train, config.data

    # Mesh and input.
    mesh = sharding.make_mesh(jax.devices()[: config.num_devices] if config.num_devices else None)
    sharding.check_global_batch(d_cfg.batch_size, mesh)
    n_proc = jax.process_count()
    if d_cfg.batch_size % n_proc:
        raise ValueError(f"data.batch_size={d_cfg.batch_size} is not divisible by {n_proc} processes")
    tcfg = transform_config(config)
    source = make_source(config, d_cfg.phase, d_cfg.synthetic_num, d_cfg.synthetic_seed)
    height, width = example_size(source, tcfg)
    steps_per_epoch = pipeline.steps_per_epoch(len(source), batch_size=d_cfg.batch_size // n_proc, shard_count=n_proc)
    total_steps = t_cfg.max_steps or (config.optim.niter + config.optim.niter_decay) * steps_per_epoch
    dataset = pipeline.build_dataset(source, batch_size=d_cfg.batch_size // n_proc, transform=tcfg,
                                     seed=config.seed, shuffle=not d_cfg.serial_batches,
                                     worker_count=d_cfg.worker_count, skip_bad_examples=d_cfg.skip_bad_examples)
    data_iter = iter(dataset)

    # Model, optimizers, state at its sharding.
    vgg, vgg_vars = (None, None)
    if not config.loss.no_vgg_loss:
        vgg, vgg_vars = load_vgg(config.loss.vgg_backbone, config.loss.vgg_layers, config.loss.vgg_weights or None,
                                 config.loss.vgg_imagenet_norm, factory.compute_dtype(config.model))
        vgg_vars = jax.device_put(vgg_vars, sharding.replicated(mesh))
    nets = make_networks(config, vgg)
    tx_g, tx_d = make_optimizers(config.optim)
    init_fn = make_init_fn(config, nets, tx_g, tx_d, height=height, width=width)
    rng = jax.random.PRNGKey(config.seed)
    abstract = jax.eval_shape(init_fn, rng)
    state_sh = sharding.state_shardings(abstract, mesh)

    manager = checkpointing.make_manager(workdir, max_to_keep=t_cfg.keep_checkpoints)
    if manager.latest_step() is not None:
        state, start = checkpointing.restore(manager, checkpointing.abstract_with_sharding(abstract, state_sh),
                                             data_iter)
        log.info("resumed from step %d in %s", start, workdir)
    else:
        state = sharding.init_sharded(init_fn, mesh, rng)
        if t_cfg.init_from:
            state, copied, fresh = transfer_from_stage1(state, load_stage1(t_cfg.init_from, mesh))
            if not any(p.startswith("generator/") for p in copied):
                raise ValueError(
                    f"train.init_from={t_cfg.init_from!r} shares no generator array with this config; a local "
                    "enhancer's trunk has width ngf * 2**n_local_enhancers, so set model.ngf to the stage-1 ngf "
                    "divided by 2**n_local_enhancers (official: 64 -> 32), and keep n_downsample/n_blocks_global")
            log.info("init_from %s: copied %d arrays, %d start fresh: %s", t_cfg.init_from, len(copied), len(fresh),
                     ", ".join(sorted({"/".join(p.split("/")[:2]) for p in fresh})))
        start = 0
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))

    # Compile once up front so compile time is reported separately.
    step_fn = sharding.jit_train_step(make_train_step(config, nets, tx_g, tx_d, steps_per_epoch=steps_per_epoch),
                                      abstract, mesh)
    first = next(data_iter)
    check_labels(first["label"], config.model.label_nc, f"the first {d_cfg.source} batch")
    batch = sharding.global_batch(first, mesh)
    t0 = time.time()
    step_fn = step_fn.lower(state, batch, vgg_vars).compile()
    compile_s = time.time() - t0
    generate = jax.jit(make_generate_fn(config, nets), out_shardings=sharding.replicated(mesh))
    samples = holdout_batch(config, tcfg, source)
    writer = MetricWriter(workdir)
    log.info("compiled the train step in %.1fs; %d steps (%d per epoch), global batch %d, %dx%d, %d devices",
             compile_s, total_steps, steps_per_epoch, d_cfg.batch_size, width, height, mesh.size)

    def sample_and_score(step: int) -> float:
        fake = np.asarray(generate(inference_params(state), state.g_collections, jax.tree_util.tree_map(jnp.asarray, samples)))
        l1 = float(np.abs(fake - samples["image"]).mean())
        if jax.process_index() == 0:
            visualize.write_sample_grid(workdir, step, samples, fake, label_nc=config.model.label_nc)
        return l1

    evaluator = make_evaluator(config)

    def evaluate_now(step: int) -> None:
        scalars = evaluator(lambda b: generate(inference_params(state), state.g_collections, jax.tree_util.tree_map(jnp.asarray, b)))
        writer.write(step, scalars)
        log.info("step %d eval: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in scalars.items()))

    stop = {"now": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))  # TPU preemption notice
    last_saved, result = None, {"compile_s": compile_s}
    l1 = sample_and_score(start)
    writer.write(start, {"holdout_L1": l1})
    result["holdout_L1_start"] = l1
    bar = tqdm(total=total_steps, initial=start, disable=jax.process_index() != 0, dynamic_ncols=True)
    t_last, n_last = time.time(), start
    step = start
    try:
        while step < total_steps:
            state, metrics = step_fn(state, batch, vgg_vars)
            step += 1
            bar.update(1)
            if step % t_cfg.log_every == 0 or step == total_steps:
                scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
                check_finite(step, scalars, last_saved)
                now = time.time()
                scalars["images_per_s"] = (step - n_last) * d_cfg.batch_size / max(now - t_last, 1e-9)
                t_last, n_last = now, step
                writer.write(step, scalars)
                bar.set_postfix(G=f"{scalars['loss_G']:.3f}", D=f"{scalars['loss_D']:.3f}",
                                img_s=f"{scalars['images_per_s']:.2f}")
            if step % t_cfg.sample_every == 0 or step == total_steps:
                l1 = sample_and_score(step)
                writer.write(step, {"holdout_L1": l1})
            if evaluator is not None and step % config.eval.every_steps == 0:
                evaluate_now(step)
            if step % t_cfg.checkpoint_every == 0 or step == total_steps or stop["now"]:
                checkpointing.save(manager, step, state, config, data_iter)
                last_saved = step
            if stop["now"]:
                log.warning("SIGTERM: saved step %d, stopping", step)
                break
            if step < total_steps:
                batch = sharding.global_batch(next(data_iter), mesh)
    finally:
        bar.close()
        writer.close()
        manager.wait_until_finished()
        manager.close()
        signal.signal(signal.SIGTERM, previous)
    result.update(step=step, holdout_L1_end=l1, state=state)
    return result
