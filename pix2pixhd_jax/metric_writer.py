"""Scalars of a run: one JSON line per logged step (metrics.jsonl) and TensorBoard event files.

The workdir may be local or a gs:// URL. A cloud object has no append, so on gs:// the JSON lines
are batched (uploaded every `flush_secs` and on close) and each event file is held in memory and
uploaded whole on flush through `storage` (tensorboardX's own gs:// writer uploads again when it is
garbage-collected at interpreter exit, and hangs there when the endpoint is already gone).
"""
from __future__ import annotations

import io
import json
import logging
import sys
import time
from typing import Optional

import jax

# tensorboardX's writer imports torch when it is installed (the `torch` extra), only to accept torch
# tensors: 2 s of CPU at every start of the train command, which logs floats. A None entry makes that
# import fail; a later `import torch` (reading official weights) still works.
_TORCH_LOADED = "torch" in sys.modules
if not _TORCH_LOADED:
    sys.modules["torch"] = None  # type: ignore[assignment]
try:
    from tensorboardX import SummaryWriter, record_writer
finally:
    if not _TORCH_LOADED:
        del sys.modules["torch"]

from pix2pixhd_jax import storage
from pix2pixhd_jax.run_folder import RunFolder

log = logging.getLogger(__name__)


class _ObjectEventFile:
    """A tensorboardX record sink for one gs:// event file: buffered, uploaded whole on flush."""

    def __init__(self, path: str):
        self.path = path
        self.buffer = io.BytesIO()
        self.dirty = False
        self.closed = False

    def write(self, data: bytes) -> None:
        self.buffer.write(data)
        self.dirty = True

    def flush(self) -> None:
        if self.dirty and not self.closed:
            storage.write_bytes(self.path, self.buffer.getvalue())
            self.dirty = False

    def close(self) -> None:
        """Upload what is pending once; later calls (tensorboardX's atexit hook) do nothing."""
        self.flush()
        self.closed = True


class _ObjectEventFileFactory:
    def open(self, path: str) -> _ObjectEventFile:
        return _ObjectEventFile(path)

    def directory_check(self, path: str) -> None:
        del path  # objects need no parent folders


record_writer.register_writer_factory("gs", _ObjectEventFileFactory())


class MetricWriter:
    """Scalars as one JSON line per logged step and as TensorBoard events (process 0 only).

    A run continues the lines of the checkpoint it resumes: lines after `resume_step` (written by a
    run that stopped before checkpointing them) are dropped, TensorBoard hides their events
    (`purge_step`), and a scalar already recorded at `resume_step` is not written twice. A fresh run
    (`resume_step` None) starts from an empty file. `flush` is what a checkpoint waits for: every
    line and event up to it is stored before the checkpoint is started.
    """

    def __init__(self, run: RunFolder, *, resume_step: Optional[int], timeout_s: Optional[float] = None,
                 flush_secs: float = 30.0):
        self.enabled = jax.process_index() == 0
        self.path, self.events = run.metrics, run.tensorboard
        self.remote = run.remote
        self.timeout_s = timeout_s
        self.flush_secs = flush_secs
        self.pending: list[str] = []
        self.last_flush = time.monotonic()
        self.recorded: set[tuple[int, str]] = set()
        self.tensorboard = None
        if self.enabled:
            self.recorded = storage.bounded(f"reading metrics {self.path}", timeout_s, self._continue_from, resume_step)
            # Events after the resumed step were never checkpointed: TensorBoard hides them.
            purge = 0 if resume_step is None else resume_step + 1
            self.tensorboard = SummaryWriter(self.events, purge_step=purge)

    def _continue_from(self, resume_step: Optional[int]) -> set[tuple[int, str]]:
        """Keep the lines up to `resume_step` (rewriting the file if others follow); (step, key) pairs at it."""
        if not storage.exists(self.path):
            return set()
        kept, dropped = [], 0
        for line in storage.read_text(self.path).splitlines():
            try:
                record = json.loads(line)
                keep = resume_step is not None and int(record["step"]) <= resume_step
            except (ValueError, KeyError, TypeError):  # a line cut short by a crash
                keep = False
            if keep:
                kept.append(record)
            else:
                dropped += 1
        if dropped:
            storage.write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
            since = "" if resume_step is None else f" after step {resume_step}"
            log.warning("%s: dropped %d lines%s, written by a run that stopped before checkpointing them",
                        self.path, dropped, since)
        return {(resume_step, k) for r in kept if r["step"] == resume_step for k in r if k != "step"}

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in scalars.items() if (step, k) not in self.recorded}
        if not scalars:
            return
        self.pending.append(json.dumps({"step": step, **scalars}) + "\n")
        if not self.remote or time.monotonic() - self.last_flush >= self.flush_secs:
            self._flush_lines()
        for k, v in scalars.items():
            self.tensorboard.add_scalar(k, v, step)

    def _flush_lines(self) -> None:
        """Write the pending JSON lines (on gs:// one rewrite of the object for all of them)."""
        if self.pending:
            lines = "".join(self.pending)
            storage.bounded(f"writing metrics to {self.path}", self.timeout_s, storage.append_text, self.path, lines)
            self.pending = []
        self.last_flush = time.monotonic()

    def flush(self) -> None:
        """Store every line and TensorBoard event written so far (before a checkpoint counts as done)."""
        if not self.enabled:
            return
        self._flush_lines()
        storage.bounded(f"writing TensorBoard events to {self.events}", self.timeout_s, self.tensorboard.flush)

    def close(self) -> None:
        if not self.enabled or self.tensorboard is None:
            return
        self.flush()
        tensorboard, self.tensorboard = self.tensorboard, None
        storage.bounded("closing the TensorBoard writer", self.timeout_s, tensorboard.close)
