"""The files of one run under its workdir, named in one place.

  config.json      the resolved config (process 0)
  checkpoints/     Orbax steps: state, config, data-iterator position (checkpointing)
  metrics.jsonl    one JSON line per logged step (metric_writer)
  tensorboard/     event files (metric_writer)
  samples/         sample grids and their index.html (visualize)
  lease.json       the run that holds the workdir (workdir_lease)

The workdir is resolved once: a local path made absolute, a gs:// URL kept as it is.
"""
from __future__ import annotations

import dataclasses

from pix2pixhd_jax import storage


@dataclasses.dataclass(frozen=True)
class RunFolder:
    root: str

    @classmethod
    def of(cls, workdir: storage.PathLike) -> "RunFolder":
        return cls(str(storage.path(workdir)))

    @property
    def remote(self) -> bool:
        return storage.is_remote(self.root)

    @property
    def config_json(self) -> str:
        return storage.join(self.root, "config.json")

    @property
    def checkpoints(self) -> str:
        return storage.join(self.root, "checkpoints")

    def checkpoint_step(self, step: int) -> str:
        return storage.join(self.checkpoints, str(step))

    @property
    def metrics(self) -> str:
        return storage.join(self.root, "metrics.jsonl")

    @property
    def tensorboard(self) -> str:
        return storage.join(self.root, "tensorboard")

    @property
    def samples(self) -> str:
        return storage.join(self.root, "samples")

    @property
    def lease(self) -> str:
        return storage.join(self.root, "lease.json")
