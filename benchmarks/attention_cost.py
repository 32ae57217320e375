"""What self-attention costs: the finest discriminator scale with full / pooled / window attention,
and the whole train step of the ablation configs, timed interleaved in one process.

  nice -n 5 python -m benchmarks.attention_cost --sizes=1024x512,2048x1024 --rounds=3 --out=benchmarks/results
  nice -n 5 python -m benchmarks.attention_cost --suite=step --step_size=128x64 --rounds=5

suite 'd': one official PatchGAN (ndf 64, n_layers_D 3, the finest of the pyramid, input label_nc 35
+ edge + RGB = 39 channels, batch 1) with an attention block after layer `--layer` (2 = 1/8 of the
image: 257x129 positions at 2048x1024), forward + backward w.r.t. its params and its input, as in
a train step. Per form: XLA's planned program memory (compiled.memory_analysis(): arguments +
outputs + temporaries; compile only, so it is reported even where running would not fit) and the
median step time over --rounds interleaved rounds (skipped when the program exceeds --max_run_gb).
suite 'step': the full train step (G + D + losses + both Adam updates) of configs/synthetic_demo.py
at --step_size with no attention, and full / pooled / window attention at D's finest scale after
--step_layer, plus pix2pixHD++ and pix2pixHD++ with full attention.
"""
from __future__ import annotations

from pix2pixhd_jax.cli import process

import argparse
import json
import statistics
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections

from benchmarks import harness
from pix2pixhd_jax.models.attention import AttentionConfig
from pix2pixhd_jax.models.discriminator import NLayerDiscriminator

D_FORMS = {"none": None, "full": AttentionConfig("full"), "pooled4": AttentionConfig("pooled", pool=4),
           "pooled8": AttentionConfig("pooled", pool=8), "window16": AttentionConfig("window", window=16)}


def parse_size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return h, w


def positions_after(layer: int, h: int, w: int, n_layers: int = 3) -> int:
    """Spatial positions of PatchGAN layer `layer` (4x4 convs, pad 2: stride 2 -> floor(n/2)+1, stride 1 -> n+1)."""
    for j in range(layer + 1):
        if j < n_layers:
            h, w = h // 2 + 1, w // 2 + 1
        else:
            h, w = h + 1, w + 1
    return h * w


def build_d(form: Optional[AttentionConfig], h: int, w: int, layer: int, dtype) -> tuple[Callable, tuple]:
    """Compiled fwd+bwd of the finest PatchGAN and its arguments."""
    d = NLayerDiscriminator(64, 3, norm="instance", attention=form, attention_after_layer=layer, dtype=dtype)
    x = jax.random.normal(jax.random.PRNGKey(0), (1, h, w, 39))
    params = jax.jit(d.init)(jax.random.PRNGKey(1), x[:, :64, :64])["params"]

    def loss(p, x):
        return sum(jnp.mean(f.astype(jnp.float32) ** 2) for f in d.apply({"params": p}, x, True))

    fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
    t = time.perf_counter()
    compiled = fn.lower(params, x).compile()
    return compiled, (params, x), time.perf_counter() - t


def suite_d(a: argparse.Namespace) -> list[dict[str, Any]]:
    dtype = jnp.bfloat16 if a.dtype == "bfloat16" else jnp.float32
    rows, runnable = [], []
    for size in a.sizes.split(","):
        h, w = parse_size(size)
        n = positions_after(a.layer, h, w)
        for name in a.forms.split(","):
            form = D_FORMS[name]
            row = {"suite": "d", "size": size, "form": name, "layer": a.layer, "positions": n, "dtype": a.dtype}
            try:
                compiled, args, compile_s = build_d(form, h, w, a.layer, dtype)
            except Exception as e:  # noqa: BLE001 -- a variant that cannot compile is a result too
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                rows.append(row)
                continue
            row.update(compile_s=compile_s, program_bytes=harness.program_memory_bytes(compiled))
            rows.append(row)
            if row["program_bytes"] <= a.max_run_gb * 1e9:
                runnable.append((row, compiled, args))
            else:
                row["skipped_run"] = f"program {row['program_bytes'] / 1e9:.1f} GB > --max_run_gb={a.max_run_gb}"
            print(json.dumps(row), flush=True)
    interleave(runnable, a.rounds)
    return rows


def suite_step(a: argparse.Namespace) -> list[dict[str, Any]]:
    h, w = parse_size(a.step_size)
    variants = {"baseline": ("synthetic_demo", None), "full": ("synthetic_demo", "full"),
                "pooled4": ("synthetic_demo", "pooled"), "window16": ("synthetic_demo", "window"),
                "pix2pixHD++": ("pix2pixhd_pp", None), "pix2pixHD++ +full": ("pix2pixhd_pp", "full")}
    rows, runnable = [], []
    for name, (config_name, form) in variants.items():
        config = harness.load_config(config_name)
        config.bench = ml_collections.ConfigDict({"height": h, "width": w})
        if form:
            config.model.d_attention_scales, config.model.attention_form = (0,), form
            config.model.d_attention_after_layer = a.step_layer
        config.data.batch_size = 1
        train = harness.compile_train_step(config)
        row = {"suite": "step", "size": a.step_size, "variant": name, "layer": a.step_layer,
               "compile_s": train.compile_s, "program_bytes": harness.program_memory_bytes(train.compiled)}
        rows.append(row)
        runnable.append((row, train.advance, ()))
        print(json.dumps(row), flush=True)
    interleave(runnable, a.rounds)
    return rows


def interleave(runnable: list, rounds: int) -> None:
    """Time (row, fn, args) variants interleaved (harness.interleave); each row gets its median and times."""
    calls = {str(i): (lambda fn=fn, args=args: fn(*args)) for i, (_, fn, args) in enumerate(runnable)}
    times = harness.interleave(calls, rounds)
    for i, (row, _, _) in enumerate(runnable):
        row["step_s"] = statistics.median(times[str(i)])
        row["step_times"] = times[str(i)]


def _d_time(r: dict) -> str:
    return f"{r['step_s']:.3f}" if "step_s" in r else ("not run: " + r.get("skipped_run", r.get("error", "")))


D_COLUMNS: tuple[harness.Column, ...] = (
    ("size", lambda r: r["size"]), ("attention", lambda r: r["form"]), ("positions", lambda r: f"{r['positions']}"),
    ("program memory GB", lambda r: f"{r['program_bytes'] / 1e9:.2f}" if "program_bytes" in r else "-"),
    ("fwd+bwd s", _d_time))
STEP_COLUMNS: tuple[harness.Column, ...] = (
    ("size", lambda r: r["size"]), ("variant", lambda r: r["variant"]),
    ("program memory GB", lambda r: f"{r['program_bytes'] / 1e9:.3f}"), ("step s", lambda r: f"{r['step_s']:.3f}"))


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table of suite d (per attention form) or of suite step (per variant)."""
    d = bool(rows) and rows[0]["suite"] == "d"
    return harness.markdown_table(rows, D_COLUMNS if d else STEP_COLUMNS) + "\n"


def main(argv=None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=("d", "step"), default="d")
    p.add_argument("--sizes", default="1024x512,2048x1024", help="WxH list for suite d")
    p.add_argument("--forms", default=",".join(D_FORMS))
    p.add_argument("--layer", type=int, default=2, help="D layer the block follows (suite d)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--max_run_gb", type=float, default=12.0, help="compile-only above this program size")
    p.add_argument("--step_size", default="128x64")
    p.add_argument("--step_layer", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="")
    a = p.parse_args(argv)
    rows = suite_d(a) if a.suite == "d" else suite_step(a)
    env = harness.environment()
    for r in rows:
        r["env"] = env
    table = markdown(rows)
    print(table)
    if a.out:
        harness.write_results(a.out, f"attention_{a.suite}", rows, table)
    return rows


if __name__ == "__main__":
    process.setup()  # XLA flags before the first computation
    main()
