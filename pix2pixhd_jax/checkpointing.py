"""Orbax checkpoints of the GAN state, the config and the grain iterator position.

Restores always go through an abstract target (ShapeDtypeStruct with sharding), so a checkpoint
written on any number of devices restores onto the current mesh, and optax states come back as
their NamedTuples. A checkpoint whose shapes do not match the current config fails with the list
of mismatched arrays instead of an Orbax traceback; one whose config differs in a key that changes
the computation without changing a shape (run_config.RESUME_MUST_MATCH: model.norm, loss.gan_mode,
the training image size) fails with the differing keys.

Integrity, one path for writing and reading:
  - save() refuses a state holding NaN or inf (FloatingPointError naming the arrays and the newest
    checkpoint). Every checkpoint on disk is therefore finite, and rotation (max_to_keep) only ever
    removes finite checkpoints older than a finite one.
  - check_writable() probes the checkpoint folder before a run compiles anything, so a read-only
    folder fails in a second instead of stalling in an async save.
  - Every read (restore, restore_config, restore_generator) first checks the step directory's
    structure (items present, JSON parseable) and turns any failure of the read itself (truncated
    array data, a garbled OCDBT manifest) into a CheckpointError naming the step directory and the
    newest earlier intact step with the command that resumes from it. There is no silent fallback
    to an older step: moving the broken step aside is the user's call (its files stay for
    inspection, and a step that is unreadable only for a moment, e.g. on a network filesystem, is
    not abandoned).
  - On gs:// Orbax cannot rename a temporary folder: a step is final once its commit_success.txt
    is written, so a step folder without it counts as incomplete.

Paths go through `storage`: the workdir may be local or a gs:// URL (posix joins, no glob, no
abspath on URLs). Every process takes part in each save and restore; Orbax lets one process
finalize a step on shared storage.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import posixpath
import tempfile
import uuid
from typing import Any, Iterator, Mapping, Optional, Sequence

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from pix2pixhd_jax import run_config, state as state_lib, storage
from pix2pixhd_jax.models import factory
from pix2pixhd_jax.run_folder import RunFolder

# What Orbax writes into a step folder on gs:// once the step is complete (no rename there).
COMMIT_SUCCESS_FILE = "commit_success.txt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be written, read or resumed; the message names the directory and the fix."""


class NonFiniteStateError(FloatingPointError):
    """The state to save holds NaN or inf; nothing was written for it."""


def make_manager(workdir: str, *, max_to_keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                           create=True)
    # Registered handlers let item_metadata() read the saved shapes before any restore.
    handlers = {"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler(),
                "data_iter": grain.checkpoint.CheckpointHandler()}
    return ocp.CheckpointManager(checkpoint_directory(workdir), options=options, item_handlers=handlers)


def checkpoint_directory(workdir: str) -> str:
    """`workdir`/checkpoints: local paths made absolute, gs:// URLs kept as they are."""
    return RunFolder.of(workdir).checkpoints


def check_writable(workdir: str) -> None:
    """Raise CheckpointError at once if checkpoints cannot be written under `workdir` (probe file, removed)."""
    target = checkpoint_directory(workdir)
    if storage.is_remote(target):
        _check_writable_remote(target)
        return
    for folder in (target, os.path.dirname(target)):
        probe = folder
        while not os.path.exists(probe):  # the nearest existing ancestor is where mkdir will write
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe):
            raise CheckpointError(f"cannot write checkpoints to {target}: {probe} is not a directory")
        try:
            fd, name = tempfile.mkstemp(prefix=".write_probe_", dir=probe)
            os.close(fd)
            os.remove(name)
        except OSError as e:
            raise CheckpointError(f"cannot write checkpoints to {target}: {probe} is not writable ({e.strerror}). "
                                  "Make it writable or pass another --workdir.") from None


def _check_writable_remote(target: str) -> None:
    """The bucket is reachable and this process may create and delete an object beside checkpoints/."""
    try:
        storage.check_backend(target)
    except storage.StorageError as e:
        raise CheckpointError(f"cannot write checkpoints to {target}: {e}") from None
    # Listing needs fewer rights than writing: write one object (unique per process) and delete it.
    probe = storage.join(posixpath.dirname(target), f".write_probe_{uuid.uuid4().hex}")
    try:
        storage.write_bytes(probe, b"")
        storage.remove(probe)
    except Exception as e:  # gcsfs raises OSError subclasses, google-auth its own errors
        raise CheckpointError(f"cannot write checkpoints to {target}: writing {probe} failed "
                              f"({type(e).__name__}: {e}). Grant the credentials in use "
                              "roles/storage.objectAdmin on the bucket or pass another --workdir.") from None


@jax.jit
def _finite_flags(leaves: list[jax.Array]) -> jax.Array:
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])


def nonfinite_arrays(state: Any) -> list[str]:
    """Paths ('g_params/generator/...') of the floating-point arrays of `state` holding NaN or inf."""
    flat, _ = jax.tree_util.tree_flatten_with_path(state)
    named = [("/".join(_key_name(k) for k in path), x) for path, x in flat
             if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
    if not named:
        return []
    flags = _finite_flags([x for _, x in named])
    flags = np.asarray(flags.addressable_data(0) if isinstance(flags, jax.Array) else flags)
    return [name for (name, _), ok in zip(named, flags) if not ok]


def save(manager: ocp.CheckpointManager, step: int, state: Any, config: ml_collections.ConfigDict,
         data_iter: Optional[Any] = None, *, force: bool = False) -> bool:
    """Start an (async) save of state + config (+ data iterator) at `step`; a non-finite state is refused."""
    bad = nonfinite_arrays(state)
    if bad:
        manager.wait_until_finished()
        newest = manager.latest_step()
        where = (f"the newest checkpoint, step {newest} in {manager.directory}, is finite (every save is checked)"
                 if newest is not None else f"no checkpoint was written to {manager.directory}")
        raise NonFiniteStateError(
            f"refusing to save step {step}: {len(bad)} arrays of the train state hold NaN or inf "
            f"({', '.join(bad[:4])}{', ...' if len(bad) > 4 else ''}); {where}. Common causes: a label id "
            ">= label_nc, too high a learning rate, Adam beta2 = 1, or bf16 overflow.")
    items = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(config.to_dict())}
    if data_iter is not None:
        items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    return manager.save(step, args=ocp.args.Composite(**items), force=force)


def step_directory(manager: ocp.CheckpointManager, step: int) -> str:
    return storage.join(str(manager.directory), str(step))


def structure_problem(path: str) -> Optional[str]:
    """What is missing or unparseable in a step directory, without reading an array (None: looks intact)."""
    if not storage.isdir(path):
        return "the directory is missing"
    names = storage.listdir(path)
    if not names:
        return "the directory is empty"
    if storage.is_remote(path) and COMMIT_SUCCESS_FILE not in names:
        return f"{COMMIT_SUCCESS_FILE} is missing (the save never completed)"
    for item in ("state", "config"):
        if not storage.isdir(storage.join(path, item)):
            return f"{item}/ is missing"
    for required in ("state/_METADATA", "config/metadata"):
        if not storage.isfile(storage.join(path, *required.split("/"))):
            return f"{required} is missing"
    files = ["state/_METADATA", "config/metadata"]
    data_iter = storage.join(path, "data_iter")
    if storage.isdir(data_iter):
        files += [f"data_iter/{n}" for n in storage.listdir(data_iter) if n.endswith(".json")]
    for name in files:
        try:
            json.loads(storage.read_text(storage.join(path, *name.split("/"))))
        except (OSError, ValueError) as e:
            return f"{name} is not readable JSON ({type(e).__name__}: {e})"
    return None


def _move_command(src: str, dst: str) -> str:
    return f"gcloud storage mv {src} {dst}" if storage.is_remote(src) else f"mv {src} {dst}"


def _broken_step_message(manager: ocp.CheckpointManager, step: int, why: str) -> str:
    path = step_directory(manager, step)
    directory = str(manager.directory)
    workdir = posixpath.dirname(directory) if storage.is_remote(directory) else os.path.dirname(directory)
    earlier = [s for s in sorted(manager.all_steps(), reverse=True)
               if s < step and structure_problem(step_directory(manager, s)) is None]
    move = _move_command(path, storage.join(workdir, f"broken_step_{step}"))
    if earlier:
        fix = (f"The newest intact earlier step is {earlier[0]}: move the broken step out of checkpoints/ and rerun "
               f"the same command to resume from step {earlier[0]}:\n  {move}")
    else:
        fix = f"No earlier intact step exists: restore it from a backup, or move it aside to start afresh:\n  {move}"
    return f"checkpoint step {step} at {path} cannot be used: {why}. {fix}"


@contextlib.contextmanager
def _reading(manager: ocp.CheckpointManager, step: int) -> Iterator[None]:
    """Check the step's structure, then turn any failure of the read inside into a CheckpointError."""
    problem = structure_problem(step_directory(manager, step))
    if problem is not None:
        raise CheckpointError(_broken_step_message(manager, step, f"it is incomplete or corrupt ({problem})"))
    try:
        yield
    except CheckpointError:
        raise
    except Exception as e:  # tensorstore, JSON, pytree and key errors alike mean a damaged step
        detail = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise CheckpointError(_broken_step_message(
            manager, step, f"reading it failed ({type(e).__name__}: {detail})")) from e


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _leaf_paths(tree: Any) -> dict[str, tuple]:
    """'a/b/c' -> shape for every array leaf; dataclass fields, namedtuple fields and dict keys alike."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(_key_name(k) for k in path): tuple(getattr(leaf, "shape", ())) for path, leaf in flat}


def _shape_problems(saved: dict[str, tuple], wanted: dict[str, tuple]) -> list[str]:
    problems = [f"  {k}: checkpoint {saved[k]} vs config {v}" for k, v in wanted.items() if k in saved and saved[k] != v]
    problems += [f"  {k}: missing from the checkpoint" for k in wanted if k not in saved]
    problems += [f"  {k}: in the checkpoint but not in this config" for k in saved if k not in wanted]
    return problems


def _saved_state_tree(manager: ocp.CheckpointManager, step: int) -> Any:
    """The saved state's metadata tree (shapes, dtypes), or None when the checkpoint has none."""
    with _reading(manager, step):
        metadata = manager.item_metadata(step)
    saved = metadata["state"] if metadata is not None and "state" in metadata else None
    return getattr(saved, "tree", saved)


def _raise_on_shape_problems(what: str, manager: ocp.CheckpointManager, step: int, saved: dict[str, tuple],
                             wanted: dict[str, tuple], config_keys: Sequence[tuple[str, Any, Any]] = ()) -> None:
    problems = _shape_problems(saved, wanted)
    if problems:
        keys = ("\nThe saved config differs in: " + ", ".join(f"{k} (checkpoint {a!r}, given {b!r})"
                                                              for k, a, b in config_keys[:8])
                + (", ..." if len(config_keys) > 8 else "") + "." if config_keys else "")
        raise ValueError(f"{what}checkpoint step {step} in {manager.directory} does not match this config "
                         f"({len(problems)} arrays differ):\n" + "\n".join(problems[:40])
                         + ("\n  ..." if len(problems) > 40 else "") + keys
                         + "\nTrain with the config saved beside it, or start a fresh workdir.")


def check_compatible(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
                     config_keys: Sequence[tuple[str, Any, Any]] = ()) -> None:
    """Raise a readable error if the saved state's array shapes differ from the current config's (naming
    `config_keys`, the (key, saved, given) config differences, when given)."""
    saved_tree = _saved_state_tree(manager, step)
    if saved_tree is not None:  # without metadata the restore itself validates
        _raise_on_shape_problems("", manager, step, _leaf_paths(saved_tree), _leaf_paths(abstract_state),
                                 config_keys)


def _absent_empty_fields(saved: Any, abstract_state: Any) -> list[str]:
    """Dataclass fields that are None in the target and missing from the saved tree.

    Such a field (e.g. GANState.g_ema without EMA) holds no arrays; checkpoints written before the
    field existed lack its key, which Orbax would reject as a structure mismatch.
    """
    if not dataclasses.is_dataclass(abstract_state) or not isinstance(saved, Mapping):
        return []
    return [f.name for f in dataclasses.fields(abstract_state)
            if getattr(abstract_state, f.name) is None and f.name not in saved]


def restore(manager: ocp.CheckpointManager, abstract_state: Any, data_iter: Optional[Any] = None,
            step: Optional[int] = None) -> tuple[Any, int]:
    """Restore state (and the data iterator in place) at `step` (default latest) onto abstract_state's sharding."""
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    saved_tree = _saved_state_tree(manager, step)  # read once: shapes and present fields
    if saved_tree is not None:  # without metadata the restore itself validates
        _raise_on_shape_problems("", manager, step, _leaf_paths(saved_tree), _leaf_paths(abstract_state))
    absent = _absent_empty_fields(saved_tree, abstract_state)
    target = abstract_state
    if absent:
        target = {f.name: getattr(abstract_state, f.name) for f in dataclasses.fields(abstract_state)
                  if f.name not in absent}
    items = {"state": ocp.args.StandardRestore(target)}
    if data_iter is not None:
        items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    with _reading(manager, step):
        restored = manager.restore(step, args=ocp.args.Composite(**items))
    state = restored["state"]
    if absent:
        state = type(abstract_state)(**state, **{name: None for name in absent})
    bad = nonfinite_arrays(state)
    if bad:
        raise CheckpointError(_broken_step_message(
            manager, step, f"{len(bad)} arrays hold NaN or inf ({', '.join(bad[:4])}); it was written before "
            "saves were checked"))
    return state, step


def check_resumable(manager: ocp.CheckpointManager, step: int, config: ml_collections.ConfigDict,
                    abstract_state: Any, defaults: Optional[ml_collections.ConfigDict] = None) -> None:
    """Refuse to resume `step` with `config` if shapes or computation-changing keys differ (RESUME_MUST_MATCH).

    A key the saved config predates trained with its value in `defaults` (configs/default.py's: a new key
    defaults to the old behaviour); without `defaults`, with `config`'s.
    """
    filler = config if defaults is None else run_config.complete(defaults.to_dict(), config)
    saved = restore_config(manager, step, defaults=filler)
    conflicts = run_config.resume_conflicts(saved, config)
    check_compatible(manager, step, abstract_state, conflicts)  # the arrays, then the keys that made them differ
    if conflicts:
        raise CheckpointError(
            f"checkpoint step {step} in {manager.directory} was trained with another config; resuming would "
            f"silently change the computation ({len(conflicts)} keys differ):\n  "
            + "\n  ".join(f"{k}: checkpoint {a!r} vs given {b!r}" for k, a, b in conflicts)
            + "\nResume with the checkpoint's values ("
            + " ".join(f"--config.{k}={a!r}" for k, a, _ in conflicts[:6])
            + "), or start a fresh workdir. Schedule, optimizer and train.* keys may change on resume.")


def restore_config(manager: ocp.CheckpointManager, step: Optional[int] = None,
                   defaults: Optional[ml_collections.ConfigDict] = None) -> ml_collections.ConfigDict:
    """The config saved with `step` (default latest); keys it predates are filled from `defaults`."""
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    with _reading(manager, step):
        restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        if not isinstance(restored["config"], Mapping):
            raise ValueError(f"the saved config is a {type(restored['config']).__name__}, not a mapping")
    return run_config.complete(restored["config"], defaults)


def restore_generator(manager: ocp.CheckpointManager, step: int, abstract_g: Mapping[str, Any]) -> dict[str, Any]:
    """Only G's side of a saved state: {'g_params', 'g_collections', 'g_ema'} at abstract_g's sharding.

    Every other saved array (D, both optimizer states) is skipped with Orbax placeholders, so
    inference reads G alone and needs neither D nor the optimizers to describe the target.
    `abstract_g['g_ema']` is ignored: the EMA is restored when the run kept one, else None.
    """
    saved = _saved_state_tree(manager, step)
    if not isinstance(saved, Mapping):
        raise CheckpointError(_broken_step_message(manager, step, "it has no readable state metadata"))
    wanted = {"g_params": abstract_g["g_params"], "g_collections": abstract_g["g_collections"]}
    has_ema = saved.get("g_ema") is not None and bool(jax.tree_util.tree_leaves(saved.get("g_ema")))
    if has_ema:
        wanted["g_ema"] = abstract_g["g_params"]
    _raise_on_shape_problems("the generator of ", manager, step,
                             _leaf_paths({k: saved[k] for k in wanted if k in saved}), _leaf_paths(wanted))
    # A PyTree handler reads the state item directly: it takes a partial target (StandardRestore does not).
    restore_args = ocp.checkpoint_utils.construct_restore_args(wanted)
    with ocp.PyTreeCheckpointer() as checkpointer, _reading(manager, step):
        restored = checkpointer.restore(storage.join(step_directory(manager, step), "state"),
                                        args=ocp.args.PyTreeRestore(item=wanted, restore_args=restore_args,
                                                                    partial_restore=True))
    bad = nonfinite_arrays(restored)
    if bad:
        raise CheckpointError(_broken_step_message(
            manager, step, f"{len(bad)} generator arrays hold NaN or inf ({', '.join(bad[:4])})"))
    return {"g_params": restored["g_params"], "g_collections": restored["g_collections"],
            "g_ema": restored["g_ema"] if has_ema else None}


@dataclasses.dataclass(frozen=True)
class TrainedGenerator:
    """G (+E) of one checkpoint step, on one device, with the config saved beside it."""

    config: ml_collections.ConfigDict
    params: Any  # G's exponential moving average when the run kept one (optim.ema_decay > 0), else its params
    collections: Any
    step: int
    workdir: str


def load_generator(workdir: str, *, step: Optional[int] = None, config: Optional[ml_collections.ConfigDict] = None,
                   defaults: Optional[ml_collections.ConfigDict] = None) -> TrainedGenerator:
    """Restore G (+E) of `workdir`'s checkpoint (latest or `step`) with the config saved beside it.

    Only G's arrays are read (not D, not the optimizer states). If `config` is given, its model
    section must equal the saved one (strict check, all differing keys listed); array shapes are
    checked against the checkpoint either way. `defaults` (configs/default.py's get_config()) fills
    keys a config saved by an older version lacks.
    """
    workdir = os.fspath(storage.path(workdir))
    storage.check_backend(workdir)
    if not storage.isdir(checkpoint_directory(workdir)):
        raise FileNotFoundError(f"{workdir} has no checkpoints/ folder; pass the --workdir a training run wrote")
    manager = make_manager(workdir, max_to_keep=1, async_save=False)
    try:
        step = manager.latest_step() if step is None else int(step)
        if step is None or step not in manager.all_steps():
            raise FileNotFoundError(f"no checkpoint step {step} in {workdir}/checkpoints; "
                                    f"steps present: {sorted(manager.all_steps())}")
        saved = restore_config(manager, step, defaults=defaults if config is None else config)
        if config is not None:
            diffs = run_config.differences(saved.model.to_dict(), config.model.to_dict(), "model.")
            if diffs:
                raise ValueError(f"the config given does not match the one saved with {workdir} step {step} "
                                 f"({len(diffs)} model keys differ):\n  " + "\n  ".join(diffs)
                                 + "\nDrop the config to use the saved one, or load the matching workdir.")
        try:
            nets = factory.build(saved)
        except AttributeError as e:  # a ConfigDict without a key this version reads
            raise ValueError(f"the config saved with {workdir} lacks a key this version needs ({e}); it was "
                             "written by an older version: pass defaults=pix2pixhd_jax.configs.default.get_config() "
                             "to fill the keys it lacks with their defaults") from None
        h = w = factory.downsample_factor(saved.model) * 2  # params do not depend on the image size
        rng = jax.random.PRNGKey(0)
        abstract = jax.eval_shape(lambda: state_lib.split_generator_variables(
            factory.init_generator_variables(nets, saved.model, rng, rng, height=h, width=w)))
        single = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        g = restore_generator(manager, step, abstract_with_sharding(
            abstract, jax.tree_util.tree_map(lambda _: single, abstract)))
    finally:
        manager.close()
    params = g["g_params"] if g["g_ema"] is None else g["g_ema"]
    return TrainedGenerator(saved, params, g["g_collections"], step, workdir)


def abstract_with_sharding(abstract: Any, shardings: Any) -> Any:
    return jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
