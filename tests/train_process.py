"""The train command as a child process, the way a terminal or a supervisor runs it, for signal and lease tests.

The child shares the test session's compile cache, its unoptimised XLA setting and its 8 fake devices,
and trains on tiny_test's 2 of them: its programs are then the very ones the in-process tests on
tiny_test compile (the cache key covers the device count), so each compiles once per machine. Ctrl-C: a child started from a non-interactive parent has SIGINT
ignored (Python then never sees it), so the child restores the default disposition, as a shell does.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import jax

# Restores SIGINT's default action, then becomes `python <args>` (a preexec_fn would fork the JAX process).
_DEFAULT_SIGINT_THEN_EXEC = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                             "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")
# JAX writes the persistent compile cache from process 0 only (many hosts must not write one shared cache),
# and on CPU a program's cache key differs per process (it hashes that process's view of the devices): so
# process 1 of a multi-process test found nothing cached and compiled its train step again on every restart.
# Those children write their own entries, by JAX's own writer minus the process-0 check (JAX internals, so
# tests only; each process's entries have their own names, so no two processes write one file).
_EVERY_PROCESS_WRITES_THE_COMPILE_CACHE = """
from jax._src import compilation_cache, compiler, config


def write_from_every_process(cache_key, compile_time_secs, module_name, backend, executable, host_callbacks):
    if not host_callbacks and compile_time_secs >= config.persistent_cache_min_compile_time_secs.value:
        compilation_cache.put_executable_and_time(cache_key, module_name, executable, backend,
                                                  int(compile_time_secs))


compiler._cache_write = write_from_every_process
import runpy

runpy.run_module("pix2pixhd_jax.cli.train", run_name="__main__", alter_sys=True)
"""
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny_test.py")


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ)  # XLA_FLAGS included: the session's device count and CPU convolution flag
    out.update(JAX_COMPILATION_CACHE_DIR=jax.config.values["jax_compilation_cache_dir"] or "",
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=str(
                   jax.config.values["jax_persistent_cache_min_compile_time_secs"]),
               JAX_DISABLE_MOST_OPTIMIZATIONS="1" if jax.config.values["jax_disable_most_optimizations"] else "0",
               JAX_PLATFORMS="cpu", **extra)
    return out


class TrainProcess:
    """`python -m pix2pixhd_jax.cli.train` on tiny_test.py; its output is collected as it comes."""

    def __init__(self, workdir, *args: str, cwd=None, extra_env=None, every_process_caches: bool = False):
        """`every_process_caches`: every process of a multi-process run writes the compile cache (see above)."""
        self.workdir = str(workdir)
        self.lines: list[str] = []
        command = ["-c", _EVERY_PROCESS_WRITES_THE_COMPILE_CACHE] if every_process_caches else \
            ["-m", "pix2pixhd_jax.cli.train"]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _DEFAULT_SIGINT_THEN_EXEC, *command, f"--config={TINY}", f"--workdir={workdir}",
             *args],
            cwd=cwd or REPO, env=env(**(extra_env or {})), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, predicate, what: str, timeout: float = 400) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise AssertionError(f"the run exited ({self.proc.returncode}) before {what}:\n{self.output[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout:.0f} s:\n{self.output[-3000:]}")
            time.sleep(0.2)

    def wait_for_output(self, text: str, timeout: float = 400) -> None:
        self.wait_for(lambda: text in self.output, repr(text), timeout)

    def wait_for_steps(self, n: int, timeout: float = 400) -> None:
        self.wait_for(lambda: len(logged_steps(self.workdir)) >= n, f"{n} logged steps", timeout)

    def finish(self, timeout: float = 400) -> int:
        self.proc.wait(timeout)
        self._reader.join(10)
        return self.proc.returncode

    def last_line(self) -> str:
        return self.lines[-1] if self.lines else ""


def metric_records(workdir) -> list[dict]:
    path = os.path.join(str(workdir), "metrics.jsonl")
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path).read().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line being written
            pass
    return out


def logged_steps(workdir) -> list[int]:
    return [r["step"] for r in metric_records(workdir) if "loss_G" in r]


def checkpoint_steps(workdir) -> list[int]:
    folder = os.path.join(str(workdir), "checkpoints")
    return sorted(int(p) for p in os.listdir(folder) if p.isdigit()) if os.path.isdir(folder) else []
