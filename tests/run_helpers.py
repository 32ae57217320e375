"""Helpers for tests that train tiny_test runs in process and read back what they saved."""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from pix2pixhd_jax import checkpointing
from pix2pixhd_jax.configs import tiny_test


def tiny_config(**overrides: Any):
    """tiny_test's config with `section__name=value` (or top-level `name=value`) overrides."""
    config = tiny_test.get_config()
    for key, value in overrides.items():
        section, name = key.split("__") if "__" in key else (None, key)
        (config[section] if section else config)[name] = value
    return config


def random_like(abstract: Any, init_std: float, seed: int = 0) -> Any:
    """Arrays for an abstract tree, drawn on the host: convs N(0, init_std), as the official weights_init
    draws them; norm scales 1; everything else (biases, optimizer moments, counters) 0."""
    rng = np.random.default_rng(seed)

    def fill(path, a):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            return rng.normal(0.0, init_std, a.shape).astype(a.dtype)
        return (np.ones if name == "scale" else np.zeros)(a.shape, a.dtype)

    return jax.tree_util.tree_map(jax.numpy.asarray, jax.tree_util.tree_map_with_path(fill, abstract))


def random_state(init, init_std: float, seed: int = 0) -> Any:
    """A state of init's structure with random weights (random_like): a test that needs a state, not the init
    program, skips the init compile (about as costly as the step's)."""
    return random_like(jax.eval_shape(init, jax.random.PRNGKey(0)), init_std, seed)  # traces only


def random_variables(module, *inputs: Any, init_std: float = 0.02, seed: int = 0) -> Any:
    """A Flax module's variables for these inputs with random weights (random_like), without compiling its init."""
    return random_like(jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs), init_std, seed)


def saved_state(workdir: str, step: int) -> dict:
    """The train state saved at `step`, as a tree of numpy arrays, whatever mesh wrote it (read onto one device)."""
    cpu0 = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    manager = checkpointing.make_manager(workdir, max_to_keep=1000, async_save=False)
    try:
        target = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=cpu0),
                                        manager.item_metadata(step)["state"])
        state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    finally:
        manager.close()
    return jax.device_get(state)
