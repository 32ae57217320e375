"""run(config, workdir): the training loop, in phases: mesh, input, model, state, compile, loop.

Everything the loop needs comes from its own module: data from `inputs`, networks from
`models.factory`, the pure step from `train_step`, shardings from `sharding`, checkpoints from
`checkpointing`, stage transfer from `staging`, scalars from `metric_writer`, sample grids from
`visualize`, periodic evaluation from `evaluation.evaluate`.
"""
from __future__ import annotations

import contextlib
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
from tqdm import tqdm

from pix2pixhd_jax import checkpointing, host_memory, inputs, run_config, sharding, staging, storage, visualize
from pix2pixhd_jax.data import pipeline
from pix2pixhd_jax.evaluation import evaluate
from pix2pixhd_jax.metric_writer import MetricWriter
from pix2pixhd_jax.models import factory
from pix2pixhd_jax.models.vgg import load_vgg
from pix2pixhd_jax.semantics import check_labels
from pix2pixhd_jax.state import inference_params
from pix2pixhd_jax.train_step import build_program

log = logging.getLogger(__name__)


def check_finite(step: int, metrics: dict[str, float], last_saved: Optional[int]) -> None:
    """Raise on non-finite logged losses; every saved checkpoint is finite (checkpointing.save checks)."""
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        where = (f"the newest checkpoint, step {last_saved}, is finite (every save is checked)"
                 if last_saved is not None else "no checkpoint was saved")
        raise FloatingPointError(
            f"non-finite losses at step {step}: {bad}; {where}. Common causes: a label id >= label_nc "
            "(NaN one-hot), too high a learning rate, or bf16 overflow.")


def total_steps_of(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    return config.train.max_steps or (config.optim.niter + config.optim.niter_decay) * steps_per_epoch


def load_perceptual_net(config: ml_collections.ConfigDict, mesh) -> tuple[Any, Any]:
    """(VGG module, its variables replicated on the mesh), or (None, None) without the VGG loss."""
    l = config.loss
    if l.no_vgg_loss:
        return None, None
    vgg, variables = load_vgg(l.vgg_backbone, l.vgg_layers, l.vgg_weights or None, l.vgg_imagenet_norm,
                              factory.compute_dtype(config.model), config.model.conv_impl)
    return vgg, jax.device_put(variables, sharding.replicated(mesh))


def reader(workdir: str):
    """A checkpoint manager for reading `workdir` (use it in a `with` block: it is closed on any error)."""
    return checkpointing.make_manager(workdir, max_to_keep=1, async_save=False)


def remote_paths(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
    """The workdir and every path the config reads that is a URL (gs://): what check_backend must pass."""
    paths = [workdir, config.data.tfds_data_dir, config.loss.vgg_weights, config.train.init_from,
             config.eval.inception_path]
    if config.data.source in ("folder", "cityscapes"):
        paths.append(config.data.dataroot)
    return [p for p in paths if p and storage.is_remote(p)]


def warn_if_not_shared(workdir: str) -> None:
    """Several hosts need one shared workdir (gs://): each would otherwise keep its own checkpoints."""
    if jax.process_count() > 1 and not storage.is_remote(workdir):
        log.warning("%d processes write to the local workdir %s: unless it is a shared filesystem mounted on "
                    "every host, each host keeps its own partial checkpoints and a restore fails. Use a "
                    "gs:// workdir on a pod.", jax.process_count(), workdir)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train according to `config`, writing checkpoints, metrics and samples under `workdir`.

    Nothing is written before the config, the data and the first batch have been checked. A run
    that already reached its last step returns at once (no compile, no new metrics line).
    """
    run_config.validate(config)
    storage.check_backend(*remote_paths(config, workdir))  # a missing backend or credentials fail here
    workdir = os.fspath(storage.path(workdir))
    warn_if_not_shared(workdir)
    t_cfg, d_cfg = config.train, config.data
    if config.num_devices > jax.device_count():
        raise run_config.ConfigError(f"num_devices={config.num_devices}: only {jax.device_count()} devices "
                                     "are available (0 = all of them)")

    # Mesh and input.
    mesh = sharding.make_mesh(jax.devices()[: config.num_devices] if config.num_devices else None)
    sharding.check_global_batch(d_cfg.batch_size, mesh)
    n_proc = jax.process_count()
    if d_cfg.batch_size % n_proc:
        raise run_config.ConfigError(f"data.batch_size={d_cfg.batch_size} is not divisible by {n_proc} processes")
    tcfg = inputs.transform_config(config)
    source = inputs.train_source(config)
    height, width = inputs.example_size(source, tcfg, skip_bad=d_cfg.skip_bad_examples)
    local_batch = d_cfg.batch_size // n_proc
    steps_per_epoch = pipeline.steps_per_epoch(len(source), batch_size=local_batch, shard_count=n_proc)
    total_steps = total_steps_of(config, steps_per_epoch)

    # Model, optimizers, the abstract state (shapes only: nothing compiled yet).
    vgg, vgg_vars = load_perceptual_net(config, mesh)
    program = build_program(config, vgg, height=height, width=width, steps_per_epoch=steps_per_epoch)
    init_fn = program.init
    rng = jax.random.PRNGKey(config.seed)
    abstract = jax.eval_shape(init_fn, rng)
    state_sh = sharding.state_shardings(abstract, mesh)
    target = checkpointing.abstract_with_sharding(abstract, state_sh)

    # One reading manager (None for a fresh workdir: nothing is created) serves the resume checks and the restore.
    has_checkpoints = storage.isdir(checkpointing.checkpoint_directory(workdir))
    with reader(workdir) if has_checkpoints else contextlib.nullcontext() as manager:
        latest = manager.latest_step() if manager is not None else None
        if latest is not None:
            checkpointing.check_resumable(manager, latest, config, target)
            if latest >= total_steps:
                state, _ = checkpointing.restore(manager, target, step=latest)
                log.info("%s already holds step %d of %d: nothing to train", workdir, latest, total_steps)
                return {"step": latest, "state": state, "already_done": True}
        checkpointing.check_writable(workdir)  # a read-only folder would stall in the first async save

        dataset = pipeline.build_dataset(source, batch_size=local_batch, transform=tcfg, seed=config.seed,
                                         shuffle=not d_cfg.serial_batches, worker_count=d_cfg.worker_count,
                                         skip_bad_examples=d_cfg.skip_bad_examples, image_size=(height, width))
        data_iter = iter(dataset)
        if latest is not None:
            state, start = checkpointing.restore(manager, target, data_iter, step=latest)
            log.info("resumed from step %d in %s", start, workdir)
    if latest is None:
        state, start = sharding.init_sharded(init_fn, mesh, rng), 0
        if t_cfg.init_from:
            state = staging.init_from_stage1(state, t_cfg.init_from, mesh, config)
    host_memory.release_freed()  # what initialising or restoring the state freed (see host_memory)
    first = next(data_iter)
    check_labels(first["label"], config.model.label_nc, f"the first {d_cfg.source} batch")
    batch = sharding.global_batch(first, mesh)

    # Compile once up front so compile time is reported separately.
    nets = program.nets
    step_fn = sharding.jit_train_step(program.step, abstract, mesh)
    t0 = time.time()
    step_fn = step_fn.lower(state, batch, vgg_vars).compile()
    compile_s = time.time() - t0
    generate = jax.jit(factory.make_generate_fn(config, nets), out_shardings=sharding.replicated(mesh))
    samples = inputs.holdout_batch(config, source)
    evaluator = evaluate.make_periodic_eval(config) if config.eval.every_steps else None
    log.info("compiled the train step in %.1fs; %d steps (%d per epoch), global batch %d, %dx%d, %d devices",
             compile_s, total_steps, steps_per_epoch, d_cfg.batch_size, width, height, mesh.size)

    # From here on the workdir is written.
    storage.makedirs(workdir)
    manager = checkpointing.make_manager(workdir, max_to_keep=t_cfg.keep_checkpoints)
    if jax.process_index() == 0:
        storage.write_text(storage.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
    writer = MetricWriter(workdir)

    def generate_now(b: dict) -> jax.Array:
        return generate(inference_params(state), state.g_collections, jax.tree_util.tree_map(jnp.asarray, b))

    def sample_and_score(step: int) -> float:
        fake = np.asarray(generate_now(samples))
        l1 = float(np.abs(fake - samples["image"]).mean())
        if jax.process_index() == 0:
            visualize.write_sample_grid(workdir, step, samples, fake, label_nc=config.model.label_nc)
        return l1

    stop = {"now": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))  # TPU preemption notice
    last_saved, result = latest, {"compile_s": compile_s}
    l1 = sample_and_score(start)
    writer.write(start, {"holdout_L1": l1})
    result["holdout_L1_start"] = l1
    host_memory.release_freed()  # and what compiling the step and the sampler freed
    bar = tqdm(total=total_steps, initial=start, disable=jax.process_index() != 0, dynamic_ncols=True, unit="step")
    t_last, n_last = time.time(), start
    step, in_flight = start, None
    try:
        while step < total_steps:
            state, metrics = step_fn(state, batch, vgg_vars)
            step += 1
            # The bar counts completed steps: wait for the previous step while this one runs.
            if in_flight is not None:
                jax.block_until_ready(in_flight)
                bar.update(1)
            in_flight = metrics["loss_G"]
            if step % t_cfg.log_every == 0 or step == total_steps:
                scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
                bar.update(1)
                in_flight = None
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
                scalars = evaluator(generate_now)
                host_memory.release_freed()  # the first evaluation compiled its networks
                writer.write(step, scalars)
                log.info("step %d eval: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in scalars.items()))
            if step % t_cfg.checkpoint_every == 0 or step == total_steps or stop["now"]:
                # Raises (saving nothing) if the state holds NaN or inf: every checkpoint kept is finite.
                checkpointing.save(manager, step, state, config, data_iter)
                last_saved = step
            if stop["now"]:
                log.warning("SIGTERM: saved step %d, stopping", step)
                break
            if step < total_steps:
                batch = sharding.global_batch(next(data_iter), mesh)
    finally:
        if in_flight is not None:
            bar.update(1)
        bar.close()
        writer.close()
        manager.wait_until_finished()
        manager.close()
        signal.signal(signal.SIGTERM, previous)
    result.update(step=step, holdout_L1_end=l1, state=state)
    return result
