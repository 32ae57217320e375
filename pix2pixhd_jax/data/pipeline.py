"""One grain pipeline for every random-access source (synthetic, folders, Cityscapes, TFDS).

  source -> this process's equal-size shard -> seeded shuffle (reshuffled every epoch)
         -> epoch truncated to whole batches -> repeat(num_epochs)
         -> random crop/flip/resize (same params for label, instance map, photo)
         -> batch (drop remainder) -> thread prefetch -> optional worker processes

Batches are dicts of host-local numpy arrays for this process ('label' int32 (B, H, W) or float32
(B, H, W, 3) when label_nc == 0; 'inst' int32 (B, H, W) when the source has instance maps;
'image' float32 (B, H, W, 3) in [-1, 1]), ready for `jax.make_array_from_process_local_data`.
Every random choice is a pure function of (seed, shard, position), so a run is reproducible and
the iterator's small state (`get_state`/`set_state`, or Orbax via `grain.checkpoint`) resumes it
exactly.
"""
from __future__ import annotations

import logging
from typing import Any, Protocol

import grain
import numpy as np

from pix2pixhd_jax.data.folders import DataError, describe_example
from pix2pixhd_jax.data.transforms import TransformConfig, output_size, transform_example


class RandomAccessSource(Protocol):
    """Anything with len() and integer indexing returning an example dict (grain's data source protocol)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


class _Transform(grain.transforms.RandomMap):
    """grain RandomMap applying pix2pixHD's transforms with grain's per-element generator."""

    def __init__(self, cfg: TransformConfig, train: bool):
        self.cfg, self.train = cfg, train

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        return transform_example(element, self.cfg, rng if self.train else None, self.train)


class _SameSize:
    """Wrap a source so that an example whose transformed size differs from the run's raises DataError.

    Batching needs one size; without this check mixed sizes fail inside grain's batching with a
    structure error naming neither file nor size. `size` None takes the first example read.
    """

    def __init__(self, source: RandomAccessSource, cfg: TransformConfig, size: tuple[int, int] | None):
        self.source, self.cfg, self.size = source, cfg, size

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.source[index]
        h, w = example["label"].shape[:2]
        out_w, out_h = output_size(w, h, self.cfg)
        if self.size is None:
            self.size = (out_h, out_w)
        elif (out_h, out_w) != self.size:
            raise DataError(
                f"{describe_example(self.source, index)} is {w}x{h} (width x height), {out_w}x{out_h} after "
                f"resize_or_crop={self.cfg.resize_or_crop!r}, but this split's examples are "
                f"{self.size[1]}x{self.size[0]}; "
                "resize the images to one size, or pick a data.resize_or_crop mode that brings them to one "
                "(a crop mode, or scale_width for one aspect ratio)")
        return example


class _SkipBad:
    """Wrap a source so that examples raising DataError are logged and returned as None (then filtered)."""

    def __init__(self, source: RandomAccessSource):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        try:
            return self.source[index]
        except DataError as e:
            logging.warning("skipping example %d: %s", index, e)
            return None


def default_shard() -> tuple[int, int]:
    """(process_index, process_count) from JAX; grain's ShardByJaxProcess uses the same values."""
    import jax  # only the process topology; nothing model-related

    return jax.process_index(), jax.process_count()


def _ensure_absl_flags_parsed() -> None:
    """grain's worker processes read absl flags; outside absl.app.run, accept their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _shard_seed(seed: int, shard_index: int) -> int:
    """A 32-bit seed per (seed, shard) so shards draw independent shuffles and crops."""
    return int(np.random.SeedSequence([seed, shard_index]).generate_state(1)[0])


def build_dataset(source: RandomAccessSource, *, batch_size: int, transform: TransformConfig, seed: int = 0,
                  train: bool = True, shuffle: bool = True, num_epochs: int | None = None,
                  shard_index: int | None = None, shard_count: int | None = None,
                  drop_remainder: bool = True, skip_bad_examples: bool = False, worker_count: int = 0,
                  worker_buffer_size: int = 2, read_threads: int = 1, prefetch_batches: int = 2,
                  image_size: tuple[int, int] | None = None) -> grain.IterDataset:
    """Return the grain IterDataset of per-process batches for `source` (see the module docstring).

    batch_size is per process; the global batch is batch_size * shard_count. num_epochs None
    repeats forever. Shards default to (jax.process_index(), jax.process_count()) and hold
    len(source) // shard_count examples each (the remainder is dropped so all hosts step together).
    skip_bad_examples logs and drops examples whose files raise DataError (batches may then
    span epoch boundaries); otherwise the first bad file stops the run with its error.
    worker_count > 0 adds grain worker processes (absl flags are marked parsed if nobody did).
    image_size (height, width) is the size every transformed example must have (None: the first
    one read); an example of another size raises DataError naming its files (skipped with
    skip_bad_examples).
    """
    if shard_index is None or shard_count is None:
        shard_index, shard_count = default_shard()
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(source)
    if n < batch_size * shard_count:
        raise DataError(f"the split has {n} examples, fewer than the global batch {batch_size * shard_count} "
                        f"(batch_size {batch_size} x {shard_count} processes); lower the batch size or add data")
    per_shard = n // shard_count
    checked = _SameSize(source, transform, image_size)
    ds = grain.MapDataset.source(_SkipBad(checked) if skip_bad_examples else checked)
    # Equal contiguous-stride shards: process i takes i, i+count, ... of the first per_shard*count items.
    ds = ds[: per_shard * shard_count][shard_index::shard_count]
    ds = ds.seed(_shard_seed(seed, shard_index))
    if shuffle:
        ds = ds.shuffle()
    if drop_remainder and not skip_bad_examples:
        # Official pix2pixHD floors an epoch to whole batches; doing it per epoch keeps batches epoch-pure.
        ds = ds[: (per_shard // batch_size) * batch_size]
    ds = ds.repeat(num_epochs)
    if skip_bad_examples:
        ds = ds.filter(lambda ex: ex is not None)
    ds = ds.random_map(_Transform(transform, train))
    read = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_batches)
    if skip_bad_examples:
        it_ds = ds.to_iter_dataset(read).batch(batch_size, drop_remainder=drop_remainder)
    else:
        it_ds = ds.batch(batch_size, drop_remainder=drop_remainder).to_iter_dataset(read)
    if worker_count > 0:
        _ensure_absl_flags_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                               per_worker_buffer_size=worker_buffer_size))
    return it_ds


def steps_per_epoch(num_examples: int, *, batch_size: int, shard_count: int = 1) -> int:
    """Batches per epoch on each process (with drop_remainder), matching build_dataset."""
    return (num_examples // shard_count) // batch_size
