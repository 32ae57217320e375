"""Process set-up: XLA:CPU temporaries stay in the heap between calls, and release_freed hands one-off garbage back."""
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import resource, sys
    from pix2pixhd_jax.cli import process
    from pix2pixhd_jax import host_memory
    import jax, jax.numpy as jnp
    process.setup()
    applied = host_memory.keep_temporaries_resident() if sys.argv[1] == "keep" else False

    @jax.jit
    def f(x):  # 96 MB of temporaries (the scatter's operand and its transpose)
        y = jnp.sin(x[:, None] * x[None, :])
        return y.at[::2].add(1.0).T.sum(0).sum()

    x = jnp.linspace(0.0, 1.0, 4096)
    for _ in range(4):  # the heap settles after a few calls
        f(x).block_until_ready()
    # The fewest faults of five calls: on a loaded machine the kernel may reclaim some idle heap pages
    # between two calls, which says nothing about whether the block is reused.
    faults = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f(x).block_until_ready()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(applied, jax.config.values["jax_cpu_enable_async_dispatch"], min(faults))
""")


def _probe(mode):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=300, check=True)
    applied, async_dispatch, faults = out.stdout.split()
    return applied == "True", async_dispatch == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_temporaries_are_reused_instead_of_faulted_in_every_call():
    plain = _probe("plain")
    kept = _probe("keep")
    assert plain[:2] == (False, True)
    assert kept[:2] == (True, False)
    # 96 MB is ~24k pages of 4 KiB, faulted in again on every call unless the block is reused.
    assert plain[2] > 10_000, plain
    assert kept[2] < plain[2] / 10, (plain, kept)


RELEASE_PROBE = textwrap.dedent("""
    import numpy as np
    from pix2pixhd_jax.cli import process
    from pix2pixhd_jax import host_memory
    process.setup()
    host_memory.keep_temporaries_resident()

    def resident_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2 ** 20

    block = np.ones(64 * 2 ** 20, np.float32)  # 256 MB from the heap (mmap is off)
    guard = np.ones(1024, np.float32)
    del block
    kept = resident_mb()
    released = host_memory.release_freed()
    print(released, int(kept - resident_mb()))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_release_freed_hands_kept_heap_memory_back():
    out = subprocess.run([sys.executable, "-c", RELEASE_PROBE], capture_output=True, text=True, timeout=300, check=True)
    released, dropped_mb = out.stdout.split()
    assert released == "True"
    assert int(dropped_mb) > 200, out.stdout  # the freed 256 MB block was still resident until the release


IMPORT_PROBE = textwrap.dedent("""
    import importlib, os, pkgutil
    import benchmarks, pix2pixhd_jax
    for package in (pix2pixhd_jax, benchmarks):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)
    from pix2pixhd_jax.cli import process
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=3"
    process.setup()
    import jax
    print(jax.device_count(), process.CPU_CONV_FLAG in os.environ["XLA_FLAGS"])
""")


def test_importing_every_module_starts_no_backend_so_setup_is_a_call_not_an_import_order():
    """Flags set after importing the whole package and the benchmarks still reach XLA (issue 27)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, timeout=300,
                         check=True, env={**env, "JAX_PLATFORMS": "cpu"})
    assert out.stdout.split() == ["3", "True"], out.stdout + out.stderr[-2000:]


def test_exit_keeps_the_last_line_last_when_teardown_finds_a_coroutine_never_awaited():
    # An async checkpoint save abandoned by a storage timeout leaves such a coroutine behind.
    script = ("import asyncio, sys\n"
              "from pix2pixhd_jax.cli import process\n"
              "async def save(): pass\n"
              "pending = save()\n"
              "print('error: saving checkpoint 6: no answer from storage', file=sys.stderr)\n"
              "process.exit_with(1)\n")
    env = {k: v for k, v in os.environ.items() if k != "PIX2PIXHD_TRACEBACK"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "error: saving checkpoint 6: no answer from storage", done.stderr
