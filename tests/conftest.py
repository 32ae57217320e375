"""Test session set-up: 8 fake CPU devices, the package's process set-up, a persistent compile cache.

The device count must be in XLA_FLAGS before JAX starts its backend (importing JAX starts none);
`process.setup()` adds the CPU convolution flag every command uses. Compiled programs are cached on disk, so the many tests that
build the same tiny networks compile them once per machine (PIX2PIXHD_TEST_CACHE moves the cache),
and XLA's optimisation passes are off (PIX2PIXHD_TEST_XLA_OPT=1 turns them on).
"""
import os
import tempfile

import jax

from pix2pixhd_jax.cli import process

# XLA:CPU's older (non-"fusion emitter") code generator compiles the test programs 2-4x faster (the
# tiny_test train step: 10 s -> 3 s of CPU); run time is not what tests measure.
TEST_XLA_FLAGS = ("--xla_force_host_platform_device_count=8", "--xla_cpu_use_fusion_emitters=false")
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *TEST_XLA_FLAGS])
os.environ.setdefault("JAX_PLATFORMS", "cpu")
process.setup()

CACHE_DIR = os.environ.get("PIX2PIXHD_TEST_CACHE", os.path.join(tempfile.gettempdir(), "pix2pixhd_jax_test_xla_cache"))
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
# Every program is cached, however fast it compiled: tests and the processes they start build the same small
# programs (layer units, inits, restarts) many times over, and an entry costs a few kB and milliseconds to write.
CACHE_MIN_COMPILE_SECS = 0.0
jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_SECS)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
# Test programs are tiny: XLA's optimisation passes cost more than they save (about 2x on compile).
jax.config.update("jax_disable_most_optimizations", os.environ.get("PIX2PIXHD_TEST_XLA_OPT", "0") != "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: multi-process, signal and benchmark tests (CI runs them too)")


# PIX2PIXHD_TEST_CPU_REPORT=<file>: one JSON line per test with the CPU seconds it used (this process and
# the children it waited for), set-up included. Unlike wall time, that does not grow with other load on
# the machine, so it shows where the suite's time goes on a shared box.
_CPU_REPORT = os.environ.get("PIX2PIXHD_TEST_CPU_REPORT")


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if _CPU_REPORT:
    import json

    import pytest

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        start = _cpu_seconds()
        yield
        with open(_CPU_REPORT, "a") as f:
            f.write(json.dumps({"test": item.nodeid, "cpu_s": round(_cpu_seconds() - start, 2)}) + "\n")


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core plus one. A few tests mostly wait (the storage-outage test idles
    through its 30 s storage timeout, the multi-process test on its children), and the extra worker
    keeps the cores busy meanwhile; setup.cfg's --maxprocesses caps the count."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores + 1


# The files that take longest are handed to the workers first: with whole files per worker, the run
# ends when the last file does, and a long file started last leaves the other workers idle meanwhile
# (longest-first scheduling). test_pod_grade.py leads: it waits out a storage timeout, so it takes the
# longest wall time for little CPU; the rest by CPU seconds per file in a fresh-clone run. Order only:
# any order passes.
LARGEST_FIRST = ("test_pod_grade.py", "test_multiprocess.py", "test_editing_window.py", "test_sharding.py",
                 "test_benchmarks.py", "test_recipe.py", "test_staging.py", "test_train.py",
                 "test_benchmarks_official.py", "test_stopping.py", "test_train_step.py", "test_segmentation.py",
                 "test_models.py", "test_gcs_end_to_end.py", "test_upsample_layers.py", "test_conv_rewrites.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LARGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order
