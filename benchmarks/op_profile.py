"""Where a train step's device time goes: its top XLA ops from a profiler trace (GPU, TPU or CPU).

  python -m benchmarks.op_profile --config=bench_1024x512 --dtype=bfloat16 --steps=3 --top=10

Builds the config's train step as `benchmarks.run` does (random VGG19 weights, synthetic batch),
compiles it, runs warm-up steps, then traces --steps steps with `jax.profiler.trace` and sums
the duration of every traced event that XLA tagged with an HLO op of the step's module
(`args.hlo_op`: kernels on a GPU's streams, thunks on XLA:CPU's threads). Each op is named by
the JAX source op it came from (the HLO's `op_name` metadata) and given a family: G, D, E, VGG,
optimizer or other. Ops that overlap (streams, XLA:CPU's thread pools) each count in full, and
on CPU part of the asynchronously run convolution thunks is untraced, so the traced total is
printed beside the step's wall time rather than assumed equal to it.
"""
from __future__ import annotations

from pix2pixhd_jax.cli import process
from pix2pixhd_jax import host_memory
from benchmarks import harness

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time
from typing import Any

import jax

# Scopes Flax and optax leave in op_name metadata, first match wins.
FAMILIES = (("VGG", "VGG"), ("Discriminator", "D"), ("Encoder", "E"), ("Generator", "G"), ("LocalEnhancer", "G"),
            ("adam", "optimizer"), ("optax", "optimizer"))
_HLO_LINE = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]*)"')


def op_names(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> the JAX op_name in its metadata, from a compiled module's text."""
    out = {}
    for line in hlo_text.splitlines():
        m = _HLO_LINE.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def family(op_name: str) -> str:
    return next((name for key, name in FAMILIES if key in op_name), "other")


def traced_op_times(trace_dir: str, module: str) -> dict[str, float]:
    """Microseconds per HLO op of `module` summed over a jax.profiler trace written to trace_dir.

    Events tagged with `args.hlo_op` count under that op; a trace without such tags counts every
    event of a device process ('/device:...') under its own name (XLA names its kernels after
    the HLO fusion they run; library kernels keep their own names).
    """
    paths = glob.glob(os.path.join(trace_dir, "**", "*perfetto_trace.json.gz"), recursive=True)
    if not paths:
        raise FileNotFoundError(f"no perfetto trace under {trace_dir}")
    with gzip.open(paths[0]) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    spans = [e for e in events if e.get("ph") == "X"]
    tagged: dict[str, float] = collections.defaultdict(float)
    for e in spans:
        args = e.get("args") or {}
        if "hlo_op" in args and module in str(args.get("hlo_module", "")):
            tagged[args["hlo_op"]] += float(e.get("dur", 0.0))
    if tagged:
        return dict(tagged)
    devices = {e["pid"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
               and str((e.get("args") or {}).get("name", "")).startswith("/device:")}
    by_name: dict[str, float] = collections.defaultdict(float)
    for e in spans:
        if e.get("pid") in devices:
            by_name[e["name"]] += float(e.get("dur", 0.0))
    return dict(by_name)


def profile_step(config, steps: int, warmup: int = 2) -> dict[str, Any]:
    """Trace `steps` train steps of config; per-op milliseconds per step, the step time, op names."""
    train = harness.compile_train_step(config)
    hlo_text = train.compiled.as_text()
    names = op_names(hlo_text)
    module = re.search(r"HloModule (\S+?)[,\s]", hlo_text).group(1)
    for _ in range(warmup):
        train.advance()
    jax.block_until_ready(train.state)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            t = time.perf_counter()
            for _ in range(steps):
                metrics = train.advance()
            jax.block_until_ready(metrics)
            step_s = (time.perf_counter() - t) / steps
        totals = traced_op_times(trace_dir, module)
    per_step_ms = {op: us / 1e3 / steps for op, us in totals.items()}
    return {"step_ms": step_s * 1e3, "op_ms": per_step_ms, "op_names": names, "module": module}


def summarize(result: dict[str, Any], top: int) -> dict[str, Any]:
    """Top ops and per-family totals, each with its share of the traced op time."""
    op_ms, names = result["op_ms"], result["op_names"]
    traced = sum(op_ms.values())
    ranked = sorted(op_ms.items(), key=lambda kv: -kv[1])
    rows = [{"hlo_op": op, "op_name": names.get(op, ""), "family": family(names.get(op, "")), "ms": ms,
             "share": ms / traced if traced else 0.0} for op, ms in ranked[:top]]
    families: dict[str, float] = collections.defaultdict(float)
    for op, ms in op_ms.items():
        families[family(names.get(op, ""))] += ms
    return {"step_ms": result["step_ms"], "traced_ms": traced, "top": rows,
            "families": dict(sorted(families.items(), key=lambda kv: -kv[1]))}


def _source(r: dict) -> str:
    return r["op_name"] if len(r["op_name"]) <= 90 else "..." + r["op_name"][-87:]


OP_COLUMNS: tuple[harness.Column, ...] = (
    ("#", lambda r: f"{r['rank']}"), ("HLO op", lambda r: r["hlo_op"]), ("source op", _source),
    ("family", lambda r: r["family"]), ("ms/step", lambda r: f"{r['ms']:.2f}"),
    ("share of traced", lambda r: f"{100 * r['share']:.1f}%"))
FAMILY_COLUMNS: tuple[harness.Column, ...] = (
    ("family", lambda r: r["family"]), ("ms/step", lambda r: f"{r['ms']:.2f}"),
    ("share of traced", lambda r: f"{100 * r['share']:.1f}%"))


def markdown(summary: dict[str, Any], title: str) -> str:
    """A title line with the step and traced times, the top-ops table and the per-family table."""
    s = summary
    ops = [{**r, "rank": i} for i, r in enumerate(s["top"], 1)]
    families = [{"family": name, "ms": ms, "share": ms / max(s["traced_ms"], 1e-9)} for name, ms in s["families"].items()]
    return "\n".join([f"{title}: step {s['step_ms']:.1f} ms, traced op time {s['traced_ms']:.1f} ms per step", "",
                      harness.markdown_table(ops, OP_COLUMNS), "", harness.markdown_table(families, FAMILY_COLUMNS)])


def main(argv=None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="bench_512x256", help="configs/<name>.py")
    p.add_argument("--dtype", default="float32", help="model.compute_dtype")
    p.add_argument("--remat", action="store_true", help="model.remat_blocks")
    p.add_argument("--steps", type=int, default=3, help="traced steps (after 2 warm-up steps)")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--out", default="", help="write the summary as JSON here")
    a = p.parse_args(argv)
    host_memory.keep_temporaries_resident()  # as the train command does
    config = harness.variant_config(harness.load_config(a.config), dtype=a.dtype, remat=a.remat)
    summary = summarize(profile_step(config, a.steps), a.top)
    device = jax.devices()[0].device_kind
    print(markdown(summary, f"{a.config} {a.dtype}{' remat' if a.remat else ''} train step on {device}"))
    if a.out:
        harness.write_json(a.out, {**summary, "config": a.config, "dtype": a.dtype, "remat": a.remat, "device": device})
    return summary


if __name__ == "__main__":
    process.setup()  # XLA flags before the first computation
    main()
