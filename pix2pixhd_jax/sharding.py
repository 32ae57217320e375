"""The only module that knows about the device mesh: shardings, global batches, jitted signatures.

Data parallelism over a 1-D `data` axis: the batch is split across devices, params and
optimizer states are replicated, XLA inserts the gradient all-reduce. Instance norm is
per sample, so no cross-device statistics are needed (batch norm becomes sync-BN for free).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """1-D mesh over all (or the given) devices with a `data` axis; Auto axes for linen + jit."""
    devices = list(devices) if devices is not None else jax.devices()
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_global_batch(global_batch_size: int, mesh: Mesh) -> None:
    n = mesh.shape[DATA_AXIS]
    if global_batch_size % n:
        raise ValueError(f"global batch size {global_batch_size} is not divisible by the {n} devices of the "
                         f"'{DATA_AXIS}' axis; set data.batch_size to a multiple of {n}")


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble per-process host arrays into global arrays sharded on `data`."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def init_sharded(init_fn: Callable[..., Any], mesh: Mesh, *args) -> Any:
    """Create the state directly at its (replicated) sharding: eval_shape, then jit with out_shardings."""
    abstract = jax.eval_shape(init_fn, *args)
    shardings = jax.tree_util.tree_map(lambda _: replicated(mesh), abstract)
    return jax.jit(init_fn, out_shardings=shardings)(*args)


def state_shardings(abstract_state: Any, mesh: Mesh) -> Any:
    return jax.tree_util.tree_map(lambda _: replicated(mesh), abstract_state)


def jit_train_step(step: Callable, abstract_state: Any, mesh: Mesh) -> Callable:
    """jit(step) with the state donated and replicated, the batch split on `data`."""
    state_sh = state_shardings(abstract_state, mesh)
    return jax.jit(step, in_shardings=(state_sh, batch_sharding(mesh), replicated(mesh)),
                   out_shardings=(state_sh, replicated(mesh)), donate_argnums=(0,))


def make_process_max(mesh: Mesh) -> Callable[[int], jax.Array]:
    """value -> the max of each process's `value`, replicated (dispatched, not waited for).

    One entry per device, so every process contributes; the reduction is an all-reduce that XLA
    runs after the work already queued.
    """
    spread = NamedSharding(mesh, P(tuple(mesh.axis_names)))
    reduce_max = jax.jit(jnp.max, out_shardings=replicated(mesh))
    local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)

    def process_max(value: int) -> jax.Array:
        local = np.full((local_devices,), value, np.int32)
        return reduce_max(jax.make_array_from_process_local_data(spread, local, (mesh.size,)))

    return process_max
