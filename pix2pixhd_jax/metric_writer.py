"""Scalars of a run: one JSON line per logged step (metrics.jsonl) and TensorBoard event files."""
from __future__ import annotations

import json
import os

import jax
from tensorboardX import SummaryWriter


class MetricWriter:
    """Scalars as one JSON line per logged step and as TensorBoard events (process 0 only)."""

    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard")) if self.enabled else None

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
            for k, v in scalars.items():
                self.tensorboard.add_scalar(k, float(v), step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
