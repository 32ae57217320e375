"""Scalars of a run: one JSON line per logged step (metrics.jsonl) and TensorBoard event files.

The workdir may be local or a gs:// URL. A cloud object has no append, so on gs:// the JSON lines
are batched (uploaded every `flush_secs` and on close) and each event file is held in memory and
uploaded whole on flush through `storage` (tensorboardX's own gs:// writer uploads again when it is
garbage-collected at interpreter exit, and hangs there when the endpoint is already gone).
"""
from __future__ import annotations

import io
import json
import time

import jax
from tensorboardX import SummaryWriter, record_writer

from pix2pixhd_jax import storage


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
    """Scalars as one JSON line per logged step and as TensorBoard events (process 0 only)."""

    def __init__(self, workdir: str, flush_secs: float = 30.0):
        self.enabled = jax.process_index() == 0
        self.path = storage.join(workdir, "metrics.jsonl")
        self.remote = storage.is_remote(workdir)
        self.flush_secs = flush_secs
        self.pending: list[str] = []
        self.last_flush = time.monotonic()
        self.tensorboard = SummaryWriter(storage.join(workdir, "tensorboard")) if self.enabled else None

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.pending.append(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
        if not self.remote or time.monotonic() - self.last_flush >= self.flush_secs:
            self.flush()
        for k, v in scalars.items():
            self.tensorboard.add_scalar(k, float(v), step)

    def flush(self) -> None:
        """Write the pending JSON lines (on gs:// one rewrite of the object for all of them)."""
        if self.pending:
            storage.append_text(self.path, "".join(self.pending))
            self.pending = []
        self.last_flush = time.monotonic()

    def close(self) -> None:
        if self.enabled:
            self.flush()
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
