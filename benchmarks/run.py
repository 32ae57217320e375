"""Benchmark suite: train step, G inference and input pipeline speed; JSON + Markdown table.

  python -m benchmarks.run --suite=train --quick          # smoke run (toy config, seconds)
  python -m benchmarks.run --suite=train                  # 512x256, 1024x512, 2048x1024; fp32/bf16; remat
  python -m benchmarks.run --suite=train --configs=bench_512x256 --dtypes=float32 --remat=0
  python -m benchmarks.run --suite=train --configs=bench_1024x512 --conv_impls=rewrite,lax   # conv forms
  python -m benchmarks.run --suite=infer
  python -m benchmarks.run --suite=data

Each (config, dtype, remat, conv_impl) variant runs in a fresh subprocess so its peak RSS is its
own (--no_isolate runs them in this process). Per variant: compile time, median step time after
warm-up (block_until_ready), images/s, peak memory (device stats on GPU/TPU, peak RSS on CPU),
FLOPs per step from XLA's cost analysis and MFU against a matmul peak measured in the same
process in the variant's dtype (and against the card's datasheet peak where harness lists one).
Results go to <out>/<suite>.json and <out>/<suite>.md and the table is printed.
"""
from __future__ import annotations

from pix2pixhd_jax.cli import process
from pix2pixhd_jax import host_memory
from benchmarks import harness

import argparse
import itertools
import json
import subprocess
import sys
import traceback
from typing import Any


SUITES = ("train", "infer", "data")
FULL_CONFIGS = ("bench_512x256", "bench_1024x512", "bench_2048x1024")
QUICK_CONFIGS = ("bench_quick",)


def run_variant(suite: str, name: str, dtype: str, remat: bool, steps: int, conv_impl: str = "") -> dict[str, Any]:
    """Measure one variant in this process; returns one result row."""
    import jax

    host_memory.keep_temporaries_resident()  # as the train command does (the first call counts)
    config = harness.variant_config(harness.load_config(name), dtype=dtype, remat=remat)
    if conv_impl:
        config.model.conv_impl = conv_impl
    if steps:
        config.bench.steps = config.bench.infer_steps = steps
    row: dict[str, Any] = {"suite": suite, "config": name, "size": f"{config.bench.width}x{config.bench.height}",
                           "netG": config.model.netG, "num_D": config.model.num_D,
                           "batch": config.data.batch_size, "dtype": dtype, "remat": remat,
                           "conv_impl": config.model.conv_impl}
    result = harness.bench_train(config) if suite == "train" else harness.bench_infer(config)
    row.update(result)
    row["matmul_peak_flops"] = harness.matmul_peak_flops(dtype)
    seconds = row.get("step_s", row.get("latency_s"))
    row["mfu"] = row["flops"] / seconds / row["matmul_peak_flops"] if row["flops"] else 0.0
    sheet = harness.datasheet_peak_flops(jax.devices()[0].device_kind, dtype)
    if sheet and row["flops"]:
        row["datasheet_peak_flops"], row["mfu_datasheet"] = sheet, row["flops"] / seconds / sheet
    row.update(harness.peak_memory_bytes())
    row["env"] = harness.environment()
    return row


def run_data(quick: bool) -> list[dict[str, Any]]:
    """Synthetic scene generation and the grain folder pipeline (worker_count 0)."""
    import tempfile

    from benchmarks import data_speed
    from pix2pixhd_jax.data import folders, synthetic

    w, h, num = (128, 64, 4) if quick else (512, 256, 40)
    rows = [{"suite": "data", "config": "synthetic_generator", "size": f"{w}x{h}",
             "items_per_s": data_speed.time_generator(num, w, h, repeats=2 if quick else 3)}]
    pw, ph, n_ex, batches = (128, 64, 4, 4) if quick else (1024, 512, 16, 20)
    with tempfile.TemporaryDirectory() as root:
        for i in range(n_ex):
            folders.write_official_example(root, "train", f"{i:06d}", synthetic.generate_example(0, i, pw, ph))
        rate = data_speed.time_pipeline(root, workers=0, batch_size=1, load_size=pw, batches=batches)
    rows.append({"suite": "data", "config": "folder_pipeline_0_workers", "size": f"{pw}x{ph}", "items_per_s": rate})
    return rows


def run_isolated(args: list[str]) -> dict[str, Any]:
    """Run one variant in a fresh interpreter and read its JSON row from the last stdout line."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _gb(x: float | None) -> str:
    return f"{x / 2 ** 30:.2f}" if x else "-"


def _measured(cell):
    """A cell that is empty in the row of a variant that failed."""
    return lambda r: "" if "error" in r else cell(r)


DATA_COLUMNS: tuple[harness.Column, ...] = (
    ("benchmark", lambda r: r["config"]), ("size", lambda r: r["size"]),
    ("items/s", lambda r: f"{r['items_per_s']:.2f}"))
MODEL_COLUMNS: tuple[harness.Column, ...] = (
    ("config", lambda r: f"{r.get('config')}"),
    ("size", _measured(lambda r: r["size"])),
    ("G", _measured(lambda r: f"{r['netG']}")),
    ("num_D", _measured(lambda r: f"{r['num_D']}")),
    ("dtype", lambda r: f"{r.get('dtype')}"),
    ("remat", lambda r: f"{r.get('remat')}"),
    ("convs", lambda r: r.get("conv_impl", "" if "error" in r else "auto")),
    ("compile s", lambda r: f"error: {' '.join(r['error'])[:80]}" if "error" in r else f"{r['compile_s']:.1f}"),
    ("time s", _measured(lambda r: f"{r.get('step_s', r.get('latency_s')):.3f}")),
    ("images/s", _measured(lambda r: f"{r['images_per_s']:.3f}")),
    ("GFLOP", _measured(lambda r: f"{r['flops'] / 1e9:.1f}")),
    ("MFU", _measured(lambda r: f"{100 * r['mfu']:.1f}%")),
    ("MFU (datasheet)", _measured(lambda r: f"{100 * r['mfu_datasheet']:.1f}%" if "mfu_datasheet" in r else "-")),
    ("program GB", _measured(lambda r: _gb(r.get("program_bytes")))),
    ("peak RSS GB", _measured(lambda r: _gb(r.get("peak_rss_bytes")))),
    ("peak device GB", _measured(lambda r: _gb(r.get("peak_device_bytes")))),
)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One Markdown table for the rows of a suite; a failed variant's row shows its error."""
    data = bool(rows) and rows[0].get("suite") == "data"
    return harness.markdown_table(rows, DATA_COLUMNS if data else MODEL_COLUMNS)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=SUITES, default="train")
    p.add_argument("--quick", action="store_true", help="toy config, one variant: a smoke run for CI")
    p.add_argument("--configs", default="", help="comma-separated configs/bench_*.py names (default: per suite)")
    p.add_argument("--dtypes", default="", help="comma-separated compute dtypes (default: the config's)")
    p.add_argument("--remat", default="", help="comma-separated 0/1 (default: the config's)")
    p.add_argument("--conv_impls", default="", help="comma-separated model.conv_impl values, e.g. rewrite,lax "
                   "(default: the config's)")
    p.add_argument("--steps", type=int, default=0, help="timed steps per variant (default: the config's)")
    p.add_argument("--out", default="benchmarks/results", help="folder for <suite>.json and <suite>.md")
    p.add_argument("--no_isolate", action="store_true", help="run variants in this process (peak RSS is cumulative)")
    p.add_argument("--_variant", default="", help=argparse.SUPPRESS)  # internal: name,dtype,remat,conv_impl
    return p.parse_args(argv)


def main(argv=None) -> list[dict[str, Any]]:
    a = parse_args(argv)
    if a._variant:
        name, dtype, remat, conv_impl = a._variant.split(",")
        print(json.dumps(run_variant(a.suite, name, dtype, remat == "1", a.steps, conv_impl)))
        return []
    if a.suite == "data":
        rows = run_data(a.quick)
    else:
        names = a.configs.split(",") if a.configs else (QUICK_CONFIGS if a.quick else FULL_CONFIGS)
        rows = []
        for name in names:
            bench = harness.load_config(name).bench
            dtypes = a.dtypes.split(",") if a.dtypes else list(bench.dtypes)
            remats = [r == "1" for r in a.remat.split(",")] if a.remat else list(bench.remat)
            if a.suite == "infer":
                remats = remats[:1]  # remat only changes the backward pass
            conv_impls = a.conv_impls.split(",") if a.conv_impls else [""]
            for dtype, remat, conv_impl in itertools.product(dtypes, remats, conv_impls):
                if a.no_isolate or a.quick:
                    try:
                        row = run_variant(a.suite, name, dtype, remat, a.steps, conv_impl)
                    except Exception:  # keep the other variants; the table shows the error
                        row = {"error": traceback.format_exc().strip().splitlines()[-1:]}
                else:
                    extra = [f"--steps={a.steps}"] if a.steps else []
                    row = run_isolated([f"--suite={a.suite}", f"--_variant={name},{dtype},{int(remat)},{conv_impl}",
                                        *extra])
                row.setdefault("config", name)
                row.setdefault("dtype", dtype)
                row.setdefault("remat", remat)
                row.setdefault("conv_impl", conv_impl or "auto")
                rows.append(row)
                print(markdown_table([row]).splitlines()[-1], flush=True)
    table = markdown_table(rows)
    harness.write_results(a.out, f"{a.suite}{'_quick' if a.quick else ''}", rows, table)
    print(table)
    return rows


if __name__ == "__main__":
    process.setup()  # XLA flags before the first computation
    main()
