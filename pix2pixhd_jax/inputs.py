"""From a run config to data: the source of a split, its transforms, and fixed example lists.

The one place that reads `config.data` for the trainer, the evaluators, the feature bank and the
command-line tools. Synthetic data draws unseen scenes for everything that is not training
(seed + HELDOUT_SEED_OFFSET), so held-out numbers never see a training scene.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Optional, Sequence

import ml_collections
import numpy as np

from pix2pixhd_jax.data import pipeline, sources, transforms
from pix2pixhd_jax.data.folders import DataError, describe_example
from pix2pixhd_jax.models import factory

log = logging.getLogger(__name__)

# Synthetic scenes for sample grids, evaluation and inference come from seed + this offset.
HELDOUT_SEED_OFFSET = 10_000
Example = dict[str, np.ndarray]


def transform_config(config: ml_collections.ConfigDict) -> transforms.TransformConfig:
    """Resize / crop / flip settings of config.data, with sizes rounded to what G accepts."""
    d, m = config.data, config.model
    return transforms.TransformConfig(
        resize_or_crop=d.resize_or_crop, load_size=d.loadSize, fine_size=d.fineSize, no_flip=d.no_flip,
        size_divisor=factory.downsample_factor(m), label_nc=m.label_nc, recolour_p=d.recolour_p,
        recolour_classes=tuple(d.recolour_classes))


def make_source(config: ml_collections.ConfigDict, split: str, num_examples: int, seed: int,
                load_image: Optional[bool] = True) -> Any:
    """A random-access source of `split`; num_examples and seed matter only for synthetic data."""
    d, m = config.data, config.model
    return sources.make_source(
        d.source, split=split, label_nc=m.label_nc, use_instance=m.use_instance, load_image=load_image,
        dataroot=d.dataroot, max_dataset_size=d.max_dataset_size or None, num_examples=num_examples,
        width=d.synthetic_width, height=d.synthetic_height, seed=seed, tfds_name=d.tfds_name,
        tfds_data_dir=d.tfds_data_dir or None)


def train_source(config: ml_collections.ConfigDict, split: str = "") -> Any:
    """The training split (config.data.phase), or `split` read the same way (synthetic data: the training scenes)."""
    d = config.data
    return make_source(config, split or d.phase, d.synthetic_num, d.synthetic_seed)


def heldout_source(config: ml_collections.ConfigDict, split: str, num: int, load_image: Optional[bool] = True) -> Any:
    """A non-training split: unseen synthetic scenes, or the named split of the dataset."""
    d = config.data
    if d.source == "synthetic":
        return make_source(config, split, num, d.synthetic_seed + HELDOUT_SEED_OFFSET)
    return make_source(config, split, 0, 0, load_image=load_image)


def _readable(source: Any, skip_bad: bool, skipped: Optional[list[str]] = None) -> Any:
    """(index, example) for the examples of `source` in order; with skip_bad, unreadable ones are logged and skipped.

    The reason for each skipped example is appended to `skipped` when given.
    """
    for i in range(len(source)):
        try:
            yield i, source[i]
        except DataError as e:
            if not skip_bad:
                raise
            log.warning("skipping example %d: %s", i, e)
            if skipped is not None:
                skipped.append(str(e))


def example_size(source: Any, transform: transforms.TransformConfig, skip_bad: bool = False) -> tuple[int, int]:
    """(height, width) of transformed examples, from the first (readable, with skip_bad) example's native size."""
    skipped: list[str] = []
    for _, example in _readable(source, skip_bad, skipped):
        h, w = example["label"].shape[:2]
        out_w, out_h = transforms.output_size(w, h, transform)
        return out_h, out_w
    first = f"; the first: {skipped[0]}" if skipped else ""
    raise DataError(f"no readable example in {source!r} ({len(source)} examples, all skipped as unreadable){first}")


def examples_of(source: Any, transform: transforms.TransformConfig, num: int, skip_bad: bool = False) -> list[Example]:
    """The first `num` (readable, with skip_bad) examples (0 = all), transformed without random crops or flips."""
    out = []
    for i, example in _readable(source, skip_bad):
        if num and len(out) == num:
            break
        example = transforms.transform_example(example, transform, None, train=False)
        if out and example["label"].shape[:2] != out[0]["label"].shape[:2]:
            (h, w), (h0, w0) = example["label"].shape[:2], out[0]["label"].shape[:2]
            error = DataError(f"{describe_example(source, i)} is {w}x{h} (width x height) after "
                              f"resize_or_crop={transform.resize_or_crop!r} but the examples before it are {w0}x{h0}; "
                              "resize the images to one size or pick a resize_or_crop mode that does")
            if not skip_bad:
                raise error
            log.warning("skipping example %d: %s", i, error)
            continue
        out.append(example)
    return out


def stack(examples: list[Example]) -> dict[str, np.ndarray]:
    """Examples -> one batch (metadata dropped); examples of different sizes are refused."""
    sizes = sorted({e["label"].shape[:2] for e in examples})
    if len(sizes) > 1:
        raise DataError(f"examples of different sizes cannot form one batch: {sizes} (height, width) after "
                        "the transforms; make the images one size or pick a data.resize_or_crop mode that does")
    return {k: np.stack([e[k] for e in examples]) for k in examples[0] if k != "meta"}


def batches(examples: Sequence[Example], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Consecutive batches of `batch_size` examples (the last may be smaller), each stacked as by stack()."""
    for i in range(0, len(examples), batch_size):
        yield stack(list(examples[i:i + batch_size]))


def train_dataset(config: ml_collections.ConfigDict, source: Any, *, local_batch: int,
                  image_size: tuple[int, int]) -> Any:
    """The grain dataset of this process's training batches (shuffled, augmented, repeating)."""
    d = config.data
    return pipeline.build_dataset(source, batch_size=local_batch, transform=transform_config(config), seed=config.seed,
                                  shuffle=not d.serial_batches, worker_count=d.worker_count,
                                  skip_bad_examples=d.skip_bad_examples, image_size=image_size)


def load_examples(config: ml_collections.ConfigDict, split: str, num: int) -> list[Example]:
    """Deterministic examples of a held-out split, transformed as in training (evaluation input)."""
    return examples_of(heldout_source(config, split, num), transform_config(config), num,
                       skip_bad=config.data.skip_bad_examples)


def holdout_batch(config: ml_collections.ConfigDict, train: Any) -> dict[str, np.ndarray]:
    """The fixed batch of the sample grids and the held-out L1 (the sample split, or unseen synthetic scenes).

    Without a readable sample split the first training examples are shown instead (then the L1
    is not held out; the log says so).
    """
    d, n = config.data, config.train.num_samples
    try:
        source = heldout_source(config, d.sample_split, n)
    except (OSError, ValueError) as e:
        log.warning("no sample split %r (%s); sample grids show training examples", d.sample_split, e)
        source = train
    examples = examples_of(source, transform_config(config), n, skip_bad=d.skip_bad_examples)
    if not examples:
        raise DataError(f"no readable example for the sample grids in {source!r}")
    return stack(examples)


def tools_split(config: ml_collections.ConfigDict) -> str:
    """The split the tools draw label maps from: unseen synthetic scenes ('test'), else data.sample_split."""
    return "test" if config.data.source == "synthetic" else config.data.sample_split


def label_maps(config: ml_collections.ConfigDict, count: int) -> tuple[Callable[[int], tuple], int]:
    """(index -> (label, inst or None) of the tools' split, transformed as at inference; how many there are)."""
    source = heldout_source(config, tools_split(config), count, load_image=None)
    transform = transform_config(config)

    def load(index: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        ex = transforms.transform_example(source[index], transform, None, train=False)
        return np.asarray(ex["label"]), (None if ex.get("inst") is None else np.asarray(ex["inst"]))

    return load, len(source)


def load_inputs(config: ml_collections.ConfigDict, *, source: str = "", dataroot: str = "", phase: str = "",
                num: int = 4) -> list[Example]:
    """Label maps (+ instance maps, + photos where present) to synthesize from, for the tools.

    Uses the run's data config, optionally pointed at another source / dataroot / split; label
    maps alone are enough (photos are read only where the folder has them).
    """
    config = ml_collections.ConfigDict(config.to_dict())
    d = config.data
    d.source = source or d.source
    d.dataroot = dataroot or d.dataroot
    split = phase or tools_split(config)
    return examples_of(heldout_source(config, split, num, load_image=None), transform_config(config), num,
                       skip_bad=config.data.skip_bad_examples)
