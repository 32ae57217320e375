"""Orbax checkpoints of the GAN state, the config and the grain iterator position.

Restores always go through an abstract target (ShapeDtypeStruct with sharding), so a checkpoint
written on any number of devices restores onto the current mesh, and optax states come back as
their NamedTuples. A checkpoint whose shapes do not match the current config fails with the list
of mismatched arrays instead of an Orbax traceback.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Optional

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from pix2pixhd_jax import run_config


def make_manager(workdir: str, *, max_to_keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                           create=True)
    # Registered handlers let item_metadata() read the saved shapes before any restore.
    handlers = {"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler(),
                "data_iter": grain.checkpoint.CheckpointHandler()}
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options,
                                 item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, state: Any, config: ml_collections.ConfigDict,
         data_iter: Optional[Any] = None, *, force: bool = False) -> bool:
    """Start an (async) save of state + config (+ data iterator) at `step`."""
    items = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(config.to_dict())}
    if data_iter is not None:
        items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    return manager.save(step, args=ocp.args.Composite(**items), force=force)


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


def check_compatible(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> None:
    """Raise a readable error if the saved state's array shapes differ from the current config's."""
    metadata = manager.item_metadata(step)
    saved_tree = metadata["state"] if metadata is not None and "state" in metadata else None
    if saved_tree is None:
        return  # nothing to compare against: the restore itself will validate
    problems = _shape_problems(_leaf_paths(getattr(saved_tree, "tree", saved_tree)), _leaf_paths(abstract_state))
    if problems:
        raise ValueError(f"checkpoint step {step} in {manager.directory} does not match this config "
                         f"({len(problems)} arrays differ):\n" + "\n".join(problems[:40])
                         + ("\n  ..." if len(problems) > 40 else "")
                         + "\nTrain with the config saved beside it, or start a fresh workdir.")


def _absent_empty_fields(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> list[str]:
    """Dataclass fields that are None in the target and missing from the saved tree.

    Such a field (e.g. GANState.g_ema without EMA) holds no arrays; checkpoints written before the
    field existed lack its key, which Orbax would reject as a structure mismatch.
    """
    if not dataclasses.is_dataclass(abstract_state):
        return []
    metadata = manager.item_metadata(step)
    saved = metadata["state"] if metadata is not None and "state" in metadata else None
    saved = getattr(saved, "tree", saved)
    if not isinstance(saved, Mapping):
        return []
    return [f.name for f in dataclasses.fields(abstract_state)
            if getattr(abstract_state, f.name) is None and f.name not in saved]


def restore(manager: ocp.CheckpointManager, abstract_state: Any, data_iter: Optional[Any] = None,
            step: Optional[int] = None) -> tuple[Any, int]:
    """Restore state (and the data iterator in place) at `step` (default latest) onto abstract_state's sharding."""
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    check_compatible(manager, step, abstract_state)
    absent = _absent_empty_fields(manager, step, abstract_state)
    target = abstract_state
    if absent:
        target = {f.name: getattr(abstract_state, f.name) for f in dataclasses.fields(abstract_state)
                  if f.name not in absent}
    items = {"state": ocp.args.StandardRestore(target)}
    if data_iter is not None:
        items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    state = restored["state"]
    if absent:
        state = type(abstract_state)(**state, **{name: None for name in absent})
    return state, step


def restore_config(manager: ocp.CheckpointManager, step: Optional[int] = None,
                   defaults: Optional[ml_collections.ConfigDict] = None) -> ml_collections.ConfigDict:
    """The config saved with `step` (default latest); keys it predates are filled from `defaults`."""
    step = manager.latest_step() if step is None else step
    restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return run_config.complete(restored["config"], defaults)


def restore_generator(manager: ocp.CheckpointManager, step: int, abstract_g: Mapping[str, Any]) -> dict[str, Any]:
    """Only G's side of a saved state: {'g_params', 'g_collections', 'g_ema'} at abstract_g's sharding.

    Every other saved array (D, both optimizer states) is skipped with Orbax placeholders, so
    inference reads G alone and needs neither D nor the optimizers to describe the target.
    `abstract_g['g_ema']` is ignored: the EMA is restored when the run kept one, else None.
    """
    metadata = manager.item_metadata(step)
    saved = metadata["state"] if metadata is not None and "state" in metadata else None
    saved = getattr(saved, "tree", saved)
    if not isinstance(saved, Mapping):
        raise ValueError(f"checkpoint step {step} in {manager.directory} has no readable state metadata")
    wanted = {"g_params": abstract_g["g_params"], "g_collections": abstract_g["g_collections"]}
    has_ema = saved.get("g_ema") is not None and bool(jax.tree_util.tree_leaves(saved.get("g_ema")))
    if has_ema:
        wanted["g_ema"] = abstract_g["g_params"]
    problems = _shape_problems(_leaf_paths({k: saved[k] for k in wanted if k in saved}), _leaf_paths(wanted))
    if problems:
        raise ValueError(f"generator of checkpoint step {step} in {manager.directory} does not match this config "
                         f"({len(problems)} arrays differ):\n" + "\n".join(problems[:40]))
    # A PyTree handler reads the state item directly: it takes a partial target (StandardRestore does not).
    restore_args = ocp.checkpoint_utils.construct_restore_args(wanted)
    with ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(os.path.join(str(manager.directory), str(step), "state"),
                                        args=ocp.args.PyTreeRestore(item=wanted, restore_args=restore_args,
                                                                    partial_restore=True))
    return {"g_params": restored["g_params"], "g_collections": restored["g_collections"],
            "g_ema": restored["g_ema"] if has_ema else None}


def abstract_with_sharding(abstract: Any, shardings: Any) -> Any:
    return jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
