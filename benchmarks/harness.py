"""The shared harness of every benchmark: configs, interleaved timing, results, and the measurements.

Every script is launched as `python -m benchmarks.<name>` from the repository root and uses:
  load_config        a config by name (`bench_512x256`, a module of configs/) or path (`x.py[:arg]`); a
                     training config without a `bench` section gets one at the size its data trains at
  interleave         every variant called once per round, so machine load hits all alike; medians
  markdown_table     the one Markdown writer: rows of dicts through (header, cell) columns
  write_results      <out>/<stem>.json (the rows) and <out>/<stem>.md (the table)
and, for the model benchmarks, a config's train step or G forward compiled, timed, FLOPs counted.
Everything returns plain dicts of numbers.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import json
import os
import resource
import statistics
import sys
import time
from typing import Any, Callable, Hashable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pix2pixhd_jax import host_memory
from pix2pixhd_jax.models import factory
from pix2pixhd_jax.models.vgg import VGG
from pix2pixhd_jax.models.factory import make_generate_fn
from pix2pixhd_jax.train_step import build_program


def load_config(spec: str) -> ml_collections.ConfigDict:
    """A config by name (`bench_quick`: configs/bench_quick.py) or by path (`configs/pix2pixhd_pp.py:attn`).

    After a `:`, the argument passed to the module's get_config, as the train command's --config takes it.
    """
    where, _, arg = spec.partition(":")
    if where.endswith(".py"):
        if not os.path.isfile(where):
            raise FileNotFoundError(f"config file {where!r} does not exist; give a path to a configs/*.py file "
                                    "or a config name such as bench_512x256")
        module_spec = importlib.util.spec_from_file_location(
            f"_benchmark_config_{os.path.splitext(os.path.basename(where))[0]}", where)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(f"pix2pixhd_jax.configs.{where}")
        except ModuleNotFoundError as e:
            if e.name != f"pix2pixhd_jax.configs.{where}":
                raise
            raise FileNotFoundError(f"no config named {where!r} in configs/; give a name such as bench_512x256 "
                                    "(configs/bench_512x256.py) or a path ending in .py") from None
    config = module.get_config(arg) if arg else module.get_config()
    if "bench" not in config:  # a training config: benchmark its step at the size it trains at
        from pix2pixhd_jax.configs import bench_512x256

        height, width, size_from = data_image_size(config)
        config.bench = bench_512x256.bench_section(height=height, width=width, steps=5)
        config.bench.size_from = size_from
    return config


def data_image_size(config: ml_collections.ConfigDict) -> tuple[int, int, str]:
    """(height, width, the keys they came from) of the images the config's data section trains on."""
    d = config.data
    if d.source == "synthetic" and d.resize_or_crop == "none":
        return d.synthetic_height, d.synthetic_width, "data.synthetic_*"
    if "crop" in d.resize_or_crop:
        return d.fineSize, d.fineSize, "data.fineSize"
    # scale_width / resize: Cityscapes' 2:1 frames at data.loadSize wide.
    return d.loadSize // 2, d.loadSize, "data.loadSize (2:1 frames; --height/--width for others)"


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    """Wall seconds of n calls of fn, each waited for with block_until_ready (a no-op on non-JAX results)."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return times


def interleave(calls: Mapping[Hashable, Callable[[], Any]], rounds: int, *, warmup: int = 1,
               after_round: Optional[Callable[[int, dict], None]] = None) -> dict[Hashable, list[float]]:
    """Seconds of every call per round: `warmup` untimed calls each, then `rounds` rounds calling each once.

    Alternating the variants within a round spreads the load of a shared machine over all of them
    alike, where timing one variant after another would charge a burst of load to one. after_round,
    if given, sees the round number and the times so far (for progress lines).
    """
    for fn in calls.values():
        for _ in range(warmup):
            jax.block_until_ready(fn())
    times: dict[Hashable, list[float]] = {name: [] for name in calls}
    for r in range(rounds):
        for name, fn in calls.items():
            times[name] += timed(fn, 1)
        if after_round is not None:
            after_round(r, times)
    return times


def medians(times: Mapping[Hashable, Sequence[float]]) -> dict[Hashable, float]:
    """The median of each variant's times."""
    return {name: statistics.median(values) for name, values in times.items()}


# A Markdown column: its header and the text of its cell for one row.
Column = tuple[str, Callable[[dict], str]]


def markdown_table(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    """One Markdown table, a line per row, cells from the columns' functions (no trailing newline)."""
    lines = ["| " + " | ".join(header for header, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row) for _, cell in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str, data: Any, indent: int = 1) -> None:
    """data as indented JSON at path, its folder created."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=indent)


def write_results(out: str, stem: str, rows: Any, table: str) -> None:
    """<out>/<stem>.json (the rows) and <out>/<stem>.md (the table, newline-terminated)."""
    write_json(os.path.join(out, f"{stem}.json"), rows)
    with open(os.path.join(out, f"{stem}.md"), "w") as f:
        f.write(table if table.endswith("\n") else table + "\n")


def variant_config(config: ml_collections.ConfigDict, *, dtype: str, remat: bool) -> ml_collections.ConfigDict:
    """A copy of a bench config with the compute dtype and residual-block remat set."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.compute_dtype = dtype
    config.model.remat_blocks = remat
    return config


def synthetic_batch(config: ml_collections.ConfigDict, seed: int = 0) -> dict[str, jax.Array]:
    """Random labels, two instances per class and a random photo at the bench size."""
    b, h, w = config.data.batch_size, config.bench.height, config.bench.width
    rng = np.random.default_rng(seed)
    label = rng.integers(0, config.model.label_nc, (b, h, w)).astype(np.int32)
    inst = (label * 1000 + rng.integers(0, 2, (b, h, w))).astype(np.int32)
    image = rng.uniform(-1, 1, (b, h, w, config.model.output_nc)).astype(np.float32)
    return {"label": jnp.asarray(label), "inst": jnp.asarray(inst), "image": jnp.asarray(image)}


def random_vgg(config: ml_collections.ConfigDict) -> tuple[VGG, Any]:
    """The perceptual network with random weights: same FLOPs as the pretrained one, no file needed."""
    loss = config.loss
    vgg = VGG(loss.vgg_backbone, tuple(loss.vgg_layers), loss.vgg_imagenet_norm, factory.compute_dtype(config.model),
              config.model.conv_impl)
    variables = jax.jit(vgg.init)(jax.random.PRNGKey(1), jnp.zeros((1, 32, 32, 3)))
    return vgg, variables


def peak_memory_bytes() -> dict[str, float]:
    """Peak device memory (GPU/TPU memory stats) and this process's peak RSS (Linux reports KiB)."""
    out = {"peak_rss_bytes": float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["peak_device_bytes"] = float(stats["peak_bytes_in_use"])
    return out


def model_flops(jitted, *args) -> float:
    """FLOPs of one call of a jitted function from XLA's cost analysis of its HLO lowered for CPU.

    Lowering only (no compilation), so it is cheap on any backend; the CPU lowering is used
    because a GPU executable holds its convolutions as cuDNN custom calls that XLA's cost
    analysis does not count (jax 0.11 reports 0 there). Our layers lower to the same convolutions
    on every backend, so the count is the one the device runs.
    """
    cost = jitted.trace(*args).lower(lowering_platforms=("cpu",)).cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jaxlib: one dict per computation
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def program_memory_bytes(compiled) -> float:
    """Device memory XLA planned for one call: arguments + outputs + temporaries - donated aliases.

    Unlike the allocator's peak, it excludes scratch the GPU autotuner tried while compiling.
    """
    m = compiled.memory_analysis()
    if m is None:
        return 0.0
    return float(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


# Dense (no sparsity) tensor-core peaks of NVIDIA's datasheets, FLOP/s, by device-kind substring
# (first match wins). float32 is compared with the TF32 peak: XLA and cuDNN run float32 matmuls
# and convolutions as TF32 on these cards by default.
DATASHEET_PEAK_FLOPS = (
    ("H100 PCIe", {"bfloat16": 756e12, "float32": 378e12}),
    ("H100", {"bfloat16": 989e12, "float32": 495e12}),
    ("H200", {"bfloat16": 989e12, "float32": 495e12}),
    ("A100", {"bfloat16": 312e12, "float32": 156e12}),
)


def datasheet_peak_flops(device_kind: str, dtype: str) -> float | None:
    """The datasheet peak for a device kind and compute dtype, or None where we list none (CPUs, TPUs)."""
    return next((peaks.get(dtype) for key, peaks in DATASHEET_PEAK_FLOPS if key in device_kind), None)


@functools.cache
def matmul_peak_flops(dtype: str = "float32", repeats: int = 5) -> float:
    """Best FLOP/s of a square matmul in `dtype` on the default device: the MFU denominator.

    2048 is enough to saturate two CPU cores; accelerators need 8192 to reach their peak. Measured
    once per process and dtype: the variants of one process share the device (2.4 CPU-s each on CPU).
    """
    n = 2048 if jax.default_backend() == "cpu" else 8192
    keys = jax.random.split(jax.random.PRNGKey(0))
    # Random operands: zeros can run faster than real data on some GPUs.
    a, b = (jax.random.normal(k, (n, n), jnp.dtype(dtype)) for k in keys)
    mm = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(mm(a, b))
    return 2.0 * n ** 3 / min(timed(lambda: mm(a, b), repeats))


@dataclasses.dataclass
class TrainStep:
    """A config's train step built and compiled as the train command does, on a synthetic batch."""

    jitted: Any  # jit(program.step), state donated: for cost analysis before the first call
    compiled: Any
    state: Any  # the current state; each call of advance() replaces it
    batch: dict
    vgg_vars: Any
    compile_s: float

    def advance(self) -> dict:
        """Run one step from the current state (donating it); returns the step's metrics."""
        self.state, metrics = self.compiled(self.state, self.batch, self.vgg_vars)
        return metrics


def compile_train_step(config: ml_collections.ConfigDict) -> TrainStep:
    """Random VGG19 weights, fresh state, compiled step; freed set-up memory released as `train` does."""
    vgg, vgg_vars = (None, None) if config.loss.no_vgg_loss else random_vgg(config)
    program = build_program(config, vgg, height=config.bench.height, width=config.bench.width, steps_per_epoch=1000)
    state = jax.jit(program.init)(jax.random.PRNGKey(0))
    host_memory.release_freed()
    batch = synthetic_batch(config)
    jitted = jax.jit(program.step, donate_argnums=(0,))
    t = time.perf_counter()
    compiled = jitted.lower(state, batch, vgg_vars).compile()
    compile_s = time.perf_counter() - t
    host_memory.release_freed()
    return TrainStep(jitted, compiled, state, batch, vgg_vars, compile_s)


def bench_train(config: ml_collections.ConfigDict) -> dict[str, float]:
    """Compile time, median step time, images/s and FLOPs of one train step of the config."""
    train = compile_train_step(config)
    flops = model_flops(train.jitted, train.state, train.batch, train.vgg_vars)  # before the first call donates
    rss_after_compile = peak_memory_bytes()["peak_rss_bytes"]
    timed(train.advance, config.bench.warmup)
    times = timed(train.advance, config.bench.steps)
    step_s = statistics.median(times)
    return {"compile_s": train.compile_s, "step_s": step_s, "step_min_s": min(times),
            "images_per_s": config.data.batch_size / step_s, "flops": flops,
            "program_bytes": program_memory_bytes(train.compiled), "peak_rss_through_compile_bytes": rss_after_compile}


def bench_infer(config: ml_collections.ConfigDict) -> dict[str, float]:
    """Compile time and median latency per image of G alone (eval mode)."""
    program = build_program(config, height=config.bench.height, width=config.bench.width, steps_per_epoch=1000)
    state = jax.jit(program.init)(jax.random.PRNGKey(0))
    batch = synthetic_batch(config)
    sample = jax.jit(make_generate_fn(config, program.nets))
    t = time.perf_counter()
    compiled = sample.lower(state.g_params, state.g_collections, batch).compile()
    compile_s = time.perf_counter() - t
    call = lambda: compiled(state.g_params, state.g_collections, batch)
    timed(call, config.bench.warmup)
    times = timed(call, config.bench.infer_steps)
    latency = statistics.median(times) / config.data.batch_size
    return {"compile_s": compile_s, "latency_s": latency, "latency_min_s": min(times) / config.data.batch_size,
            "images_per_s": 1.0 / latency, "flops": model_flops(sample, state.g_params, state.g_collections, batch),
            "program_bytes": program_memory_bytes(compiled)}


def environment() -> dict[str, str]:
    """What the numbers were measured on."""
    dev = jax.devices()[0]
    return {"backend": jax.default_backend(), "device": getattr(dev, "device_kind", str(dev)),
            "num_devices": str(jax.device_count()), "cpu_count": str(os.cpu_count()), "jax": jax.__version__,
            "python": sys.version.split()[0], "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
