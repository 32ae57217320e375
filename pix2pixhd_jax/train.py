"""run(config, workdir): the training loop, in phases: mesh, input, model, state, compile, loop.

Everything the loop needs comes from its own module: data from `inputs`, networks from
`models.factory`, the pure step from `train_step`, shardings from `sharding`, checkpoints from
`checkpointing`, stage transfer from `staging`, scalars from `metric_writer`, sample grids from
`visualize`, periodic evaluation from `evaluation.evaluate`.

How a run ends, and what it keeps:
  - One run per workdir: process 0 holds the workdir's lease (`workdir_lease`) from before the
    checkpoints are read until the end; a second run refuses at start (WorkdirBusy).
  - Ctrl-C and SIGTERM (`stopping`) stop after the step in flight, save a checkpoint and flush the
    metrics; every process stops after the same step.
  - Every storage operation the loop waits on is bounded by train.storage_timeout_s
    (`storage.bounded`): an outage ends the run with one StorageUnavailable naming the operation
    and the newest complete checkpoint. Clean-up after a failure is bounded too and never replaces
    the first error.
  - Metrics and TensorBoard events are stored before each checkpoint starts, and a resumed run
    continues the metrics of its checkpoint (`MetricWriter`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import threading
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pix2pixhd_jax import (checkpointing, host_memory, inputs, run_config, sharding, staging, stopping, storage,
                           visualize, workdir_lease)
from pix2pixhd_jax.data import pipeline
from pix2pixhd_jax.evaluation import evaluate
from pix2pixhd_jax.metric_writer import MetricWriter
from pix2pixhd_jax.models import factory
from pix2pixhd_jax.models.vgg import load_vgg
from pix2pixhd_jax.run_folder import RunFolder
from pix2pixhd_jax.semantics import check_labels
from pix2pixhd_jax.state import inference_params
from pix2pixhd_jax.train_step import Program, build_program

log = logging.getLogger(__name__)

FINISHED, ALREADY_DONE = "finished", "already_done"
# Clean-up after a failure (final metrics, the last async save) gets this long in all: the first
# error is already known, and a dead storage endpoint must not hold the exit for minutes more.
CLEANUP_AFTER_FAILURE_S = 10.0
COMPILE_PROGRESS_EVERY_S = 15.0


@dataclasses.dataclass(frozen=True)
class RunResult:
    """How a run ended: `outcome` is FINISHED, ALREADY_DONE, stopping.INTERRUPTED or stopping.PREEMPTED."""

    step: int  # the step `state` holds
    state: Any
    outcome: str
    checkpoint_step: Optional[int]  # the newest checkpoint of the workdir once the run ended
    holdout_l1: tuple[tuple[int, float], ...] = ()  # (step, held-out L1) measured by this run, in order
    compile_s: float = 0.0

    @property
    def already_done(self) -> bool:
        return self.outcome == ALREADY_DONE


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
    loss = config.loss
    if loss.no_vgg_loss:
        return None, None
    vgg, variables = load_vgg(loss.vgg_backbone, loss.vgg_layers, loss.vgg_weights or None, loss.vgg_imagenet_norm,
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


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the config and the data decide before any state exists: mesh, sizes, the program."""

    mesh: Any
    source: Any
    height: int
    width: int
    local_batch: int
    steps_per_epoch: int
    total_steps: int
    program: Program
    vgg_vars: Any
    abstract: Any  # the state's shapes
    target: Any  # the same, with the state's shardings (restore target)


def plan_run(config: ml_collections.ConfigDict) -> Plan:
    """Mesh, training data sizes and the program, checked; nothing is written or compiled."""
    d_cfg = config.data
    if config.num_devices > jax.device_count():
        raise run_config.ConfigError(f"num_devices={config.num_devices}: only {jax.device_count()} devices "
                                     "are available (0 = all of them)")
    mesh = sharding.make_mesh(jax.devices()[: config.num_devices] if config.num_devices else None,
                              space=config.mesh.space)
    sharding.check_global_batch(d_cfg.batch_size, mesh)
    n_proc = jax.process_count()
    if d_cfg.batch_size % n_proc:
        raise run_config.ConfigError(f"data.batch_size={d_cfg.batch_size} is not divisible by {n_proc} processes")
    source = inputs.train_source(config)
    height, width = inputs.example_size(source, inputs.transform_config(config), skip_bad=d_cfg.skip_bad_examples)
    sharding.check_spatial(height, config.mesh.space, config.model, config.loss)
    local_batch = d_cfg.batch_size // n_proc
    steps_per_epoch = pipeline.steps_per_epoch(len(source), batch_size=local_batch, shard_count=n_proc)
    total_steps = total_steps_of(config, steps_per_epoch)
    log.info("data: %d %s training examples, %dx%d, global batch %d on %d devices; %d steps (%d per epoch)",
             len(source), d_cfg.source, width, height, d_cfg.batch_size, mesh.size, total_steps, steps_per_epoch)

    vgg, vgg_vars = load_perceptual_net(config, mesh)
    program = build_program(config, vgg, height=height, width=width, steps_per_epoch=steps_per_epoch)
    abstract = jax.eval_shape(program.init, jax.random.PRNGKey(config.seed))
    state_sh = sharding.config_state_shardings(abstract, mesh, config.mesh)
    target = checkpointing.abstract_with_sharding(abstract, state_sh)
    sizes = {k: sum(x.size for x in jax.tree_util.tree_leaves(getattr(abstract, k))) / 1e6
             for k in ("g_params", "d_params")}
    log.info("model: G %.2fM parameters, D %.2fM%s", sizes["g_params"], sizes["d_params"],
             "" if config.loss.no_vgg_loss else f", {config.loss.vgg_backbone} perceptual loss")
    return Plan(mesh, source, height, width, local_batch, steps_per_epoch, total_steps, program, vgg_vars,
                abstract, target)


def compile_step(plan: Plan, state: Any, batch: dict) -> tuple[Callable, float]:
    """The train step compiled ahead of time, with a progress line every COMPILE_PROGRESS_EVERY_S.

    The compile runs on a worker thread so that the main thread stays responsive: a Ctrl-C during it
    is noticed at once (the run then stops before its first step).
    """
    step = sharding.jit_train_step(plan.program.step, plan.abstract, plan.mesh, sharding.shardings_of(plan.target))
    lowered = step.lower(state, batch, plan.vgg_vars)
    log.info("compiling the train step (XLA; typically tens of seconds on a CPU, longer for large models)")
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["compiled"] = lowered.compile()
        except BaseException as e:  # noqa: BLE001  (re-raised on the caller's thread)
            outcome["error"] = e

    t0 = time.time()
    worker = threading.Thread(target=work, name="compile train step", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(COMPILE_PROGRESS_EVERY_S)
        if worker.is_alive():
            log.info("still compiling (%.0f s)", time.time() - t0)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["compiled"], time.time() - t0


def restore_or_init(config: ml_collections.ConfigDict, plan: Plan, manager: Any, latest: Optional[int],
                    data_iter: Any) -> tuple[Any, int]:
    """The state to train from: the checkpoint `latest` (and the data position), or a fresh init."""
    if latest is not None:
        state, start = checkpointing.restore(manager, plan.target, data_iter, step=latest)
        log.info("state: resumed from step %d", start)
        return state, start
    state_sh = sharding.shardings_of(plan.target)
    state = sharding.init_sharded(plan.program.init, plan.mesh, jax.random.PRNGKey(config.seed), shardings=state_sh)
    if config.train.init_from:  # stage 1 restores replicated: back to this run's state shardings
        state = jax.device_put(staging.init_from_stage1(state, config.train.init_from, plan.mesh, config), state_sh)
    log.info("state: initialised%s", f" from stage 1 in {config.train.init_from}" if config.train.init_from else "")
    return state, 0


def run(config: ml_collections.ConfigDict, workdir: str, *, take_over: bool = False,
        defaults: Optional[ml_collections.ConfigDict] = None) -> RunResult:
    """Train according to `config`, writing checkpoints, metrics and samples under `workdir`.

    Nothing is written before the config, the data and the first batch have been checked. A run
    that already reached its last step returns at once (no compile, no new metrics line).
    `take_over` takes the workdir's lease from a run that still seems alive (see workdir_lease).
    `defaults` (configs/default.py's config) stand in for keys a resumed checkpoint's config predates
    (checkpointing.check_resumable); without them those keys take `config`'s values.
    """
    run_config.validate(config)
    storage.check_backend(*remote_paths(config, workdir))  # a missing backend or credentials fail here
    run_dir = RunFolder.of(workdir)
    workdir = run_dir.root
    warn_if_not_shared(workdir)
    timeout_s = config.train.storage_timeout_s
    with stopping.StopRequests() as stop:
        plan = plan_run(config)
        # The lease first: a second run must not even read checkpoints the first is writing.
        lease = _hold_lease(config, run_dir, take_over)
        try:
            has_checkpoints = storage.bounded(f"listing {workdir}", timeout_s, storage.isdir, run_dir.checkpoints)
            # One reading manager (None for a fresh workdir: nothing is created) serves the resume checks and
            # the restore.
            with reader(workdir) if has_checkpoints else contextlib.nullcontext() as manager:
                latest = manager.latest_step() if manager is not None else None
                if latest is not None:
                    checkpointing.check_resumable(manager, latest, config, plan.target, defaults=defaults)
                    if latest >= plan.total_steps:
                        state, _ = checkpointing.restore(manager, plan.target, step=latest)
                        log.info("%s already holds step %d of %d: nothing to train", workdir, latest,
                                 plan.total_steps)
                        return RunResult(latest, state, ALREADY_DONE, latest)
                checkpointing.check_writable(workdir)  # a read-only folder would stall in the first async save
                data_iter = iter(inputs.train_dataset(config, plan.source, local_batch=plan.local_batch,
                                                      image_size=(plan.height, plan.width)))
                state, start = restore_or_init(config, plan, manager, latest, data_iter)
            host_memory.release_freed()  # what initialising or restoring the state freed (see host_memory)
            first = next(data_iter)
            check_labels(first["label"], config.model.label_nc, f"the first {config.data.source} batch")
            batch = sharding.global_batch(first, plan.mesh)
            step_fn, compile_s = compile_step(plan, state, batch)
            log.info("compiled the train step in %.1fs", compile_s)
            loop = TrainingLoop(config, run_dir, plan, stop, lease, start=start, latest=latest)
            return loop.run(step_fn, state, batch, data_iter, compile_s)
        finally:
            lease.release()


def _hold_lease(config: ml_collections.ConfigDict, run_dir: RunFolder, take_over: bool) -> Any:
    """Process 0 takes the workdir's lease; every process learns whether it did (all refuse together)."""
    lease = workdir_lease.WorkdirLease(run_dir, stale_s=config.train.lease_stale_s, take_over=take_over,
                                       timeout_s=config.train.storage_timeout_s)
    refused: Optional[workdir_lease.WorkdirBusy] = None
    if jax.process_index() == 0:
        try:
            lease.acquire()
        except workdir_lease.WorkdirBusy as e:
            refused = e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        if int(multihost_utils.broadcast_one_to_all(np.int32(refused is not None))) and refused is None:
            lease.release()
            raise workdir_lease.WorkdirBusy(f"{run_dir.root} is in use by another run (process 0's log names it)")
    if refused is not None:
        raise refused
    return lease


class TrainingLoop:
    """The steps of one run after compiling: metrics, samples, evaluations, checkpoints, stop requests."""

    def __init__(self, config: ml_collections.ConfigDict, run_dir: RunFolder, plan: Plan, stop: stopping.StopRequests,
                 lease: Any, *, start: int, latest: Optional[int]):
        self.config, self.run_dir, self.plan, self.stop, self.lease = config, run_dir, plan, stop, lease
        self.workdir = run_dir.root
        self.start = start
        self.timeout_s = config.train.storage_timeout_s
        self.saved = latest  # the newest step whose save was started
        self.committed = latest  # the newest step known to be completely stored
        self.holdout_l1: list[tuple[int, float]] = []
        self.agree = sharding.make_process_max(plan.mesh)

    # Storage, each operation bounded.
    def _bounded(self, what: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        return storage.bounded(what, self.timeout_s, fn, *args, **kwargs)

    def _resume_hint(self) -> str:
        self._note_finished_save()
        if self.committed is None:
            return "no checkpoint was completed: rerun to start afresh"
        return f"the newest complete checkpoint is step {self.committed}: rerun to resume"

    def _finish_pending_save(self) -> None:
        if self.saved != self.committed:
            self._bounded(f"saving checkpoint {self.saved} to {self._step_dir(self.saved)}",
                          self.manager.wait_until_finished)
            self.committed = self.saved

    def _step_dir(self, step: int) -> str:
        return self.run_dir.checkpoint_step(step)

    def save(self, step: int, state: Any, data_iter: Any) -> None:
        """Store metrics and events first, then start the (async) save of `step`."""
        self.writer.flush()
        self._finish_pending_save()
        # Raises (saving nothing) if the state holds NaN or inf: every checkpoint kept is finite.
        self._bounded(f"saving checkpoint {step} to {self._step_dir(step)}", checkpointing.save,
                      self.manager, step, state, self.config, data_iter)
        self.saved = step

    def _note_finished_save(self) -> None:
        """Count the save in flight as complete once Orbax's background threads are done without an error."""
        manager = getattr(self, "manager", None)
        if manager is None or self.saved == self.committed or manager.is_saving_in_progress():
            return
        try:
            manager.check_for_errors()
        except Exception:  # noqa: BLE001  (a failed save is reported by check_background_save)
            return
        self.committed = self.saved

    def check_background_save(self) -> None:
        """Raise now if the async save in flight has failed (instead of at the next checkpoint)."""
        if self.saved != self.committed:
            self._bounded(f"saving checkpoint {self.saved} to {self._step_dir(self.saved)}",
                          self.manager.check_for_errors)
            self._note_finished_save()

    def sample_and_score(self, step: int, generate_now: Callable, samples: dict) -> float:
        fake = np.asarray(generate_now(samples))
        l1 = float(np.abs(fake - samples["image"]).mean())
        if jax.process_index() == 0:
            self._bounded(f"writing samples to {self.run_dir.samples}", visualize.write_sample_grid,
                          self.run_dir.samples, step, samples, fake, label_nc=self.config.model.label_nc)
        self.writer.write(step, {"holdout_L1": l1})
        self.holdout_l1.append((step, l1))
        return l1

    def run(self, step_fn: Callable, state: Any, batch: dict, data_iter: Any, compile_s: float) -> RunResult:
        config, plan = self.config, self.plan
        generate = jax.jit(factory.make_generate_fn(config, plan.program.nets),
                           out_shardings=sharding.replicated(plan.mesh))
        samples = inputs.holdout_batch(config, plan.source)
        evaluator = evaluate.make_periodic_eval(config) if config.eval.every_steps else None

        self.state = state

        def generate_now(b: dict) -> jax.Array:
            return generate(inference_params(self.state), self.state.g_collections,
                            jax.tree_util.tree_map(jnp.asarray, b))

        failed = True
        try:
            # From here on the workdir is written.
            storage.makedirs(self.workdir)
            self.manager = checkpointing.make_manager(self.workdir, max_to_keep=config.train.keep_checkpoints)
            if jax.process_index() == 0:
                self._bounded(f"writing {self.run_dir.config_json}", storage.write_text, self.run_dir.config_json,
                              config.to_json_best_effort(indent=2))
            self.writer = MetricWriter(self.run_dir, resume_step=self.saved, timeout_s=self.timeout_s)
            if self.stop.reason is None:
                self.sample_and_score(self.start, generate_now, samples)
                host_memory.release_freed()  # and what compiling the step and the sampler freed
            step, outcome = self._steps(step_fn, batch, data_iter, generate_now, samples, evaluator)
            self._close(failing=False)
            failed = False
        except storage.StorageError as e:
            raise storage.StorageUnavailable(f"{e}; {self._resume_hint()}") from e
        finally:
            if failed:
                self._close(failing=True)
        return RunResult(step, self.state, outcome, self.committed, tuple(self.holdout_l1), compile_s)

    def _steps(self, step_fn: Callable, batch: dict, data_iter: Any, generate_now: Callable, samples: dict,
               evaluator: Optional[Callable]) -> tuple[int, str]:
        t_cfg, plan = self.config.train, self.plan
        step = self.start
        reason = self.stop.reason_of(self.agree(self.stop.code()))  # a stop requested while compiling
        if reason is not None:
            return step, reason
        bar = tqdm(total=plan.total_steps, initial=step, disable=jax.process_index() != 0, dynamic_ncols=True,
                   unit="step")
        t_last, n_last = time.time(), step
        in_flight = None  # (loss, agreed stop code) of the step dispatched before the current one
        with bar, logging_redirect_tqdm():
            while step < plan.total_steps:
                self.state, metrics = step_fn(self.state, batch, plan.vgg_vars)
                agreed = self.agree(self.stop.code())
                step += 1
                # The bar counts completed steps: wait for the previous step while this one runs.
                if in_flight is not None:
                    jax.block_until_ready(in_flight[0])
                    bar.update(1)
                    reason = reason or self.stop.reason_of(in_flight[1])
                if jax.process_count() == 1:  # nobody to agree with: stop after the step just dispatched
                    reason = reason or self.stop.reason
                in_flight = (metrics["loss_G"], agreed)
                if self.lease.lost:
                    raise workdir_lease.WorkdirBusy(f"{self.lease.lost}; this run stops without saving "
                                                    f"(the newest checkpoint it wrote is {self.committed})")
                if step % t_cfg.log_every == 0 or step == plan.total_steps:
                    scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    bar.update(1)
                    reason = reason or self.stop.reason_of(agreed)
                    in_flight = None
                    check_finite(step, scalars, self.committed)
                    now = time.time()
                    scalars["images_per_s"] = (step - n_last) * self.config.data.batch_size / max(now - t_last, 1e-9)
                    t_last, n_last = now, step
                    self.writer.write(step, scalars)
                    bar.set_postfix(G=f"{scalars['loss_G']:.3f}", D=f"{scalars['loss_D']:.3f}",
                                    img_s=f"{scalars['images_per_s']:.2f}")
                    self.check_background_save()
                if step % t_cfg.sample_every == 0 or step == plan.total_steps:
                    self.sample_and_score(step, generate_now, samples)
                if evaluator is not None and step % self.config.eval.every_steps == 0:
                    scalars = evaluator(generate_now)
                    host_memory.release_freed()  # the first evaluation compiled its networks
                    self.writer.write(step, scalars)
                    log.info("step %d eval: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in scalars.items()))
                if step % t_cfg.checkpoint_every == 0 or step == plan.total_steps or reason is not None:
                    self.save(step, self.state, data_iter)
                if reason is not None:
                    break
                if step < plan.total_steps:
                    batch = sharding.global_batch(next(data_iter), plan.mesh)
            if in_flight is not None:
                jax.block_until_ready(in_flight[0])
                bar.update(1)
        return step, FINISHED if step >= plan.total_steps else reason or FINISHED

    def _close(self, *, failing: bool) -> None:
        """Store the last metrics, finish the last save, release the lease.

        After a failure the first error is already known: the whole clean-up then gets
        CLEANUP_AFTER_FAILURE_S, and its own errors are logged, never raised.
        """
        deadline = time.monotonic() + CLEANUP_AFTER_FAILURE_S
        writer, manager = getattr(self, "writer", None), getattr(self, "manager", None)
        actions = [writer and writer.close, manager and self._finish_pending_save,
                   manager and (lambda: self._bounded(f"closing the checkpoints of {self.workdir}", manager.close)),
                   lambda: self.lease.release(quiet=failing)]
        first_error: Optional[BaseException] = None
        for action in filter(None, actions):
            if failing:
                self.timeout_s = max(0.1, deadline - time.monotonic())
                self.lease.timeout_s = self.timeout_s
                if writer is not None:
                    writer.timeout_s = self.timeout_s
            try:
                action()
            except Exception as e:  # noqa: BLE001  (each clean-up step runs; the first error is kept)
                if failing:
                    log.debug("clean-up after the failure: %s", e)
                elif first_error is None:
                    first_error = e
        if first_error is not None:
            raise first_error
