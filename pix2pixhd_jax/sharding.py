"""The only module that knows about the device mesh: shardings, global batches, jitted signatures.

A 2-D mesh `data x space`. The batch is split on `data`; each image's height is split on `space`
(config.mesh.space devices per image). Only the batch's sharding is given: XLA's SPMD partitioner
propagates the H split through G, E, D and VGG, inserts the halo exchanges of every convolution
and all-reduces whole-image reductions (instance-norm statistics, loss means), so the step stays
one function that computes what it computes on one device. With space = 1 this is plain data
parallelism (instance norm is per sample: no cross-device statistics).

Params and optimizer states are replicated, or with config.mesh.shard_params stored split on
`data` (ZeRO / FSDP style: each array's largest axis divisible by the data size); XLA gathers a
weight where it is used and the Adam update runs on the shards.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from pix2pixhd_jax.models.conv_rewrites import use_rewrites

DATA_AXIS = "data"
SPACE_AXIS = "space"
# State fields that shard_params splits; collections (BN statistics, spectral-norm vectors) and the step stay replicated.
SHARDABLE_FIELDS = ("g_params", "g_opt_state", "d_params", "d_opt_state", "g_ema")


def make_mesh(devices: Optional[Sequence[jax.Device]] = None, space: int = 1) -> Mesh:
    """(data, space) mesh over all (or the given) devices; `space` devices share one image's height.

    Devices are taken in order, so `space` consecutive devices form one image's group: with `space`
    dividing each host's devices, one image's halo exchanges stay on one host's chips.
    """
    devices = list(devices) if devices is not None else jax.devices()
    if space < 1 or len(devices) % space:
        raise ValueError(f"mesh.space={space} must be >= 1 and divide the {len(devices)} devices; "
                         f"pick a divisor of {len(devices)} (or set num_devices to a multiple of {space})")
    if jax.process_count() > 1 and jax.local_device_count() % space:
        raise ValueError(f"mesh.space={space} must divide the {jax.local_device_count()} devices of each host, "
                         "so that one image's rows are read and exchanged within one host")
    # In the given order (jax.devices() lists each host's devices together), not a topology-driven
    # reordering: a `space` group must not straddle hosts.
    grid = np.array(devices, dtype=object).reshape(len(devices) // space, space)
    auto = jax.sharding.AxisType.Auto
    return Mesh(grid, (DATA_AXIS, SPACE_AXIS), axis_types=(auto, auto))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch entries are (N, H, ...) maps (label, inst, image): N split on `data`, H on `space`."""
    return NamedSharding(mesh, P(DATA_AXIS, SPACE_AXIS))


def check_global_batch(global_batch_size: int, mesh: Mesh) -> None:
    n = mesh.shape[DATA_AXIS]
    if global_batch_size % n:
        raise ValueError(f"global batch size {global_batch_size} is not divisible by the {n} devices of the "
                         f"'{DATA_AXIS}' axis; set data.batch_size to a multiple of {n}")


def spatial_scales(model_cfg: Any, loss_cfg: Any) -> list[tuple[str, int]]:
    """(name, downsampling factor) of every map whose rows the `space` axis splits, finest first.

    G's and E's stride-2 levels, D's input pyramid and its strided layers, VGG's pooled levels up
    to the deepest tap. D's 4x4 stride-2 layers give h/2 + 1 rows; the +1 row is left to XLA's
    padded shards.
    """
    n_local = model_cfg.n_local_enhancers if model_cfg.netG == "local" else 0
    scales = [(f"G's 1/{2 ** k} level", 2 ** k) for k in range(1, model_cfg.n_downsample_global + n_local + 1)]
    if model_cfg.instance_feat or model_cfg.label_feat:
        scales += [(f"E's 1/{2 ** k} level", 2 ** k) for k in range(1, model_cfg.n_downsample_E + 1)]
    for i in range(model_cfg.num_D):
        scales += [(f"D scale {i}'s " + (f"layer {j} output" if j else "input") + f" (1/{2 ** (i + j)})", 2 ** (i + j))
                   for j in range(0 if i else 1, model_cfg.n_layers_D + 1)]
    if not loss_cfg.no_vgg_loss:
        deepest = max(int(name[4]) for name in loss_cfg.vgg_layers)  # 'reluB_k': block B follows B-1 pools
        scales += [(f"VGG's block {b} (1/{2 ** (b - 1)})", 2 ** (b - 1)) for b in range(2, deepest + 1)]
    return sorted(scales, key=lambda s: s[1])


# Rows per device at D's deepest strided layer. With one row per device there, XLA's partitioned
# backward of D's 4x4 convs gave wrong kernel gradients (measured: tests/test_sharding.py's toy D at
# 32 rows over 4 devices); two rows per device and more matched one device.
MIN_ROWS_PER_DEVICE = 2


def check_spatial(height: int, space: int, model_cfg: Any, loss_cfg: Any) -> None:
    """Raise ValueError naming the first map whose rows do not split evenly (and deeply enough) over `space`."""
    if space == 1:
        return
    if use_rewrites(model_cfg.conv_impl):
        raise ValueError(f"mesh.space={space} with model.conv_impl={model_cfg.conv_impl!r} on {jax.default_backend()} "
                         "runs the CPU conv rewrites, whose space-to-depth reshapes XLA's partitioner splits "
                         "wrongly over image rows (wrong D gradients, measured); set --config.model.conv_impl=lax "
                         "(what GPU and TPU run) or mesh.space=1")
    scales = [("the image", 1)] + spatial_scales(model_cfg, loss_cfg)
    deepest = scales[-1][1]
    need = deepest * space * MIN_ROWS_PER_DEVICE
    fix = (f"Use an image height that is a multiple of {deepest * space} and at least {need} (data.loadSize / "
           f"fineSize), or a smaller mesh.space")
    for name, factor in scales:
        if height % (factor * space):
            rows = f"{height / factor:g}"
            raise ValueError(f"image height {height} does not split evenly over mesh.space={space} devices at "
                             f"{name}: {rows} rows, not a multiple of {space}. {fix}")
    if height < need:
        raise ValueError(f"image height {height} leaves {height // deepest // space} row(s) per device at "
                         f"{scales[-1][0]} with mesh.space={space}; at least {MIN_ROWS_PER_DEVICE} are needed "
                         f"(the partitioned 4x4 convs there). {fix}")


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble per-process host arrays (whole images) into global arrays split on `data` and `space`."""
    out = {}
    for k, v in local_batch.items():
        v = np.asarray(v)
        global_shape = (v.shape[0] * jax.process_count(),) + v.shape[1:]
        out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh), v, global_shape)
    return out


def sharded_axis(shape: Sequence[int], n: int, min_size: int) -> Optional[int]:
    """The axis that shard_params splits n ways: the largest divisible one; None keeps the array replicated."""
    if n == 1 or math.prod(shape) < max(min_size, 1):
        return None
    divisible = [i for i, d in enumerate(shape) if d % n == 0 and d >= n]
    return max(divisible, key=lambda i: (shape[i], i)) if divisible else None


def _param_sharding(leaf: Any, mesh: Mesh, min_size: int) -> NamedSharding:
    axis = sharded_axis(getattr(leaf, "shape", ()), mesh.shape[DATA_AXIS], min_size)
    if axis is None:
        return replicated(mesh)
    return NamedSharding(mesh, P(*([None] * axis + [DATA_AXIS])))


def state_shardings(abstract_state: Any, mesh: Mesh, shard_params: bool = False, min_size: int = 0) -> Any:
    """Shardings of the train state: replicated, or (shard_params) params, Adam moments and EMA split on `data`."""
    if not shard_params:
        return jax.tree_util.tree_map(lambda _: replicated(mesh), abstract_state)
    fields = {f: getattr(abstract_state, f) for f in SHARDABLE_FIELDS if getattr(abstract_state, f, None) is not None}
    split = {f: jax.tree_util.tree_map(lambda x: _param_sharding(x, mesh, min_size), tree) for f, tree in fields.items()}
    rest = jax.tree_util.tree_map(lambda _: replicated(mesh), abstract_state.replace(**{f: None for f in fields}))
    return rest.replace(**split)


def config_state_shardings(abstract_state: Any, mesh: Mesh, mesh_cfg: Any) -> Any:
    """state_shardings with config.mesh's shard_params and min_shard_size."""
    return state_shardings(abstract_state, mesh, mesh_cfg.shard_params, mesh_cfg.min_shard_size)


def shardings_of(abstract_with_sharding: Any) -> Any:
    """The shardings carried by a tree of ShapeDtypeStructs (e.g. a restore target)."""
    return jax.tree_util.tree_map(lambda a: a.sharding, abstract_with_sharding)


def bytes_per_device(abstract: Any, shardings: Any) -> int:
    """Bytes one device holds of a pytree of arrays (or ShapeDtypeStructs) stored at `shardings`."""
    leaves, sh = jax.tree_util.tree_leaves(abstract), jax.tree_util.tree_leaves(shardings)
    return sum(math.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize for x, s in zip(leaves, sh))


def init_sharded(init_fn: Callable[..., Any], mesh: Mesh, *args, shardings: Any = None) -> Any:
    """Create the state directly at its sharding (default replicated): eval_shape, then jit with out_shardings."""
    if shardings is None:
        shardings = state_shardings(jax.eval_shape(init_fn, *args), mesh)
    return jax.jit(init_fn, out_shardings=shardings)(*args)


def jit_train_step(step: Callable, abstract_state: Any, mesh: Mesh, state_sh: Any = None) -> Callable:
    """jit(step) with the state donated at `state_sh` (default replicated), the batch split on `data` x `space`."""
    state_sh = state_shardings(abstract_state, mesh) if state_sh is None else state_sh
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
