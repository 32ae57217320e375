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


def check_compatible(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> None:
    """Raise a readable error if the saved state's array shapes differ from the current config's."""
    metadata = manager.item_metadata(step)
    saved_tree = metadata["state"] if metadata is not None and "state" in metadata else None
    if saved_tree is None:
        return  # nothing to compare against: the restore itself will validate
    saved = _leaf_paths(getattr(saved_tree, "tree", saved_tree))
    wanted = _leaf_paths(abstract_state)
    problems = [f"  {k}: checkpoint {saved[k]} vs config {v}" for k, v in wanted.items() if k in saved and saved[k] != v]
    problems += [f"  {k}: missing from the checkpoint" for k in wanted if k not in saved]
    problems += [f"  {k}: in the checkpoint but not in this config" for k in saved if k not in wanted]
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


def restore_config(manager: ocp.CheckpointManager, step: Optional[int] = None) -> ml_collections.ConfigDict:
    step = manager.latest_step() if step is None else step
    restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return ml_collections.ConfigDict(restored["config"])


def abstract_with_sharding(abstract: Any, shardings: Any) -> Any:
    return jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
