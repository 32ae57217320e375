"""Memory planner: compile a config's train step ahead of time on N host devices; print bytes per device.

  python -m benchmarks.memory --config=configs/label2city_1024p.py --devices=8 --space=8
  python -m benchmarks.memory --config=configs/label2city_4k.py --devices=16 --space=16 \
      --compute_dtype=bfloat16 --remat

Nothing runs: the state, the batch and VGG's weights are shapes only (jax.eval_shape), the step is
lowered with the train command's shardings on a (data x space) mesh of N CPU devices (XLA's
host-device-count flag) and compiled; XLA's memory analysis of the partitioned program gives one
device's argument, output, temporary and total bytes (total = arguments + outputs + temporaries -
donated aliases, the state being donated). Parameter + optimizer bytes per device are counted from
the state's shardings. Convolutions are planned in their accelerator form (--conv_impl=lax; the CPU
rewrites exist only for speed on CPU). The CPU compiler's buffer assignment stands in for the
accelerator's: GPU/TPU compilers fuse and schedule differently, so treat totals as estimates
(README: "Pods and memory" compares them with device measurements where there are any).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional, Sequence

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="config file or name, e.g. configs/label2city_4k.py or label2city_4k")
    p.add_argument("--devices", type=int, default=1, help="devices of the mesh (host CPU devices stand in)")
    p.add_argument("--space", type=int, default=0, help="mesh.space: devices one image's height is split over "
                   "(default: the config's)")
    p.add_argument("--shard_params", action="store_true", help="mesh.shard_params: params and Adam moments split on data")
    p.add_argument("--compute_dtype", default="", help="model.compute_dtype (default: the config's)")
    p.add_argument("--remat", action="store_true", help="model.remat_blocks")
    p.add_argument("--conv_impl", default="lax", help="model.conv_impl ('lax' = what GPU/TPU run)")
    p.add_argument("--batch", type=int, default=0, help="global batch (default: the config's, at least one image "
                   "per data row)")
    p.add_argument("--height", type=int, default=0, help="image height (default: from the config's data section)")
    p.add_argument("--width", type=int, default=0, help="image width (default: from the config's data section)")
    return p.parse_args(argv)


def set_host_devices(n: int) -> None:
    """N CPU devices for the planner's mesh: must run before JAX starts."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT_FLAG)]
    os.environ["XLA_FLAGS"] = " ".join(flags + [f"{DEVICE_COUNT_FLAG}={n}"])
    os.environ["JAX_PLATFORMS"] = "cpu"


def image_size(config, height: int = 0, width: int = 0) -> tuple[int, int, str]:
    """(height, width, how it was chosen) for the plan: flags, a bench section, or the data section."""
    if height and width:
        return height, width, "flags"
    if "bench" in config:  # harness.load_config gives a training config one from its data section
        return config.bench.height, config.bench.width, config.bench.get("size_from", "config.bench")
    from benchmarks import harness  # imports JAX: only once the devices are set

    return harness.data_image_size(config)


def param_opt_bytes(abstract_state: Any, state_sh: Any) -> int:
    """Bytes one device holds of the params, both Adam states and the EMA."""
    from pix2pixhd_jax import sharding

    fields = [f for f in sharding.SHARDABLE_FIELDS if getattr(abstract_state, f, None) is not None]
    return sum(sharding.bytes_per_device(getattr(abstract_state, f), getattr(state_sh, f)) for f in fields)


def plan(config, devices: Sequence[Any], *, height: int, width: int, batch: int = 0) -> dict[str, Any]:
    """Compile config's train step on `devices` as a (data x config.mesh.space) mesh; bytes per device."""
    import time

    import jax
    import jax.numpy as jnp

    from pix2pixhd_jax import checkpointing, sharding
    from pix2pixhd_jax.models import factory
    from pix2pixhd_jax.models.vgg import VGG
    from pix2pixhd_jax.train_step import build_program

    mesh = sharding.make_mesh(devices, space=config.mesh.space)
    data = mesh.shape[sharding.DATA_AXIS]
    batch = batch or -(-config.data.batch_size // data) * data
    sharding.check_global_batch(batch, mesh)
    sharding.check_spatial(height, config.mesh.space, config.model, config.loss)
    vgg, vgg_vars = None, None
    if not config.loss.no_vgg_loss:
        loss_cfg = config.loss
        vgg = VGG(loss_cfg.vgg_backbone, tuple(loss_cfg.vgg_layers), loss_cfg.vgg_imagenet_norm,
                  factory.compute_dtype(config.model), config.model.conv_impl)
        shapes = jax.eval_shape(vgg.init, jax.random.PRNGKey(1), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
        vgg_vars = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                                         sharding=sharding.replicated(mesh)), shapes)
    program = build_program(config, vgg, height=height, width=width, steps_per_epoch=1000)
    abstract = jax.eval_shape(program.init, jax.random.PRNGKey(0))
    state_sh = sharding.config_state_shardings(abstract, mesh, config.mesh)
    batch_sh = sharding.batch_sharding(mesh)
    maps = {"label": ((batch, height, width), jnp.int32), "inst": ((batch, height, width), jnp.int32),
            "image": ((batch, height, width, config.model.output_nc), jnp.float32)}
    abstract_batch = {k: jax.ShapeDtypeStruct(s, t, sharding=batch_sh) for k, (s, t) in maps.items()}
    step = sharding.jit_train_step(program.step, abstract, mesh, state_sh)
    t = time.perf_counter()
    compiled = step.lower(checkpointing.abstract_with_sharding(abstract, state_sh), abstract_batch, vgg_vars).compile()
    compile_s = time.perf_counter() - t
    m = compiled.memory_analysis()
    out = {"devices": mesh.size, "data": data, "space": config.mesh.space, "batch": batch,
           "size": f"{width}x{height}", "argument_bytes": m.argument_size_in_bytes, "output_bytes": m.output_size_in_bytes,
           "temp_bytes": m.temp_size_in_bytes, "alias_bytes": m.alias_size_in_bytes,
           "param_opt_bytes": param_opt_bytes(abstract, state_sh), "compile_s": compile_s}
    out["total_bytes"] = out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
    return out


def planned_config(args: argparse.Namespace):
    """The config file with the planner's flags applied."""
    from benchmarks import harness  # imports JAX: after set_host_devices (JAX reads JAX_PLATFORMS on import)

    config = harness.load_config(args.config)
    config.mesh.space = args.space or config.mesh.space
    config.mesh.shard_params = args.shard_params or config.mesh.shard_params
    config.model.conv_impl = args.conv_impl
    config.model.remat_blocks = args.remat or config.model.remat_blocks
    if args.compute_dtype:
        config.model.compute_dtype = args.compute_dtype
    return config


def report(result: dict[str, Any], config) -> str:
    """The plan as aligned lines (GiB = 2**30 bytes)."""
    gib = lambda x: f"{x / 2 ** 30:8.3f} GiB"
    m = config.model
    lines = [f"{result['size']} batch {result['batch']}, {result['devices']} devices = data {result['data']} x space "
             f"{result['space']}, shard_params={config.mesh.shard_params}, {m.compute_dtype}, "
             f"remat={m.remat_blocks}, conv_impl={m.conv_impl} (compiled in {result['compile_s']:.0f} s)",
             "per device:"]
    for key in ("argument", "output", "temp", "alias", "total", "param_opt"):
        name = {"alias": "donated (-)", "param_opt": "params + optimizer"}.get(key, key)
        lines.append(f"  {name:20s}{gib(result[key + '_bytes'])}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    set_host_devices(args.devices)
    from pix2pixhd_jax.cli import process
    import jax

    process.setup()  # XLA flags (and the host device count above) before the first computation

    config = planned_config(args)
    from pix2pixhd_jax import run_config

    run_config.validate(config)
    height, width, _ = image_size(config, args.height, args.width)
    try:
        result = plan(config, jax.devices()[: args.devices], height=height, width=width, batch=args.batch)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report(result, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
