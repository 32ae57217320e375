"""TFDS builders (ArrayRecord, random access) for the synthetic set and for folder/Cityscapes data.

Prepare once (no TensorFlow needed), then read anywhere with `tfds.data_source` (how pods read
from cloud storage). The ArrayRecord writer needs a local folder, so `--data_dir gs://...` prepares
in a local temporary folder and uploads the result (storage.copytree); reading from gs:// goes
through array_record's own GCS client. The manual directory may be local or gs:// too:

  # synthetic street scenes; configs 512x256, 1024x512, 2048x1024 (sizes of each split below)
  python -m pix2pixhd_jax.cli.tfds_prepare --dataset synthetic_streets/512x256 --data_dir ~/tensorflow_datasets
  # your data: the official layout (train_label/ train_inst/ train_img/ [test_*]) or Cityscapes
  # (gtFine/ leftImg8bit/) in a manual directory; configs official, official_rgb (label_nc 0), cityscapes
  python -m pix2pixhd_jax.cli.tfds_prepare --dataset paired_folders/cityscapes \
      --manual_dir /data/cityscapes --data_dir gs://my-bucket/tfds

and in the trainer:
  source = TfdsSource("synthetic_streets/512x256", split="train", data_dir=...)
  ds = pipeline.build_dataset(source, ...)

Stored features: 'label' 8-bit PNG (H, W, 1) (RGB PNG for official_rgb), 'inst' int32 (H, W)
zlib tensor (TFDS' PIL decoder refuses 16-bit PNGs; this keeps ids like 26003 exact), 'image'
RGB PNG, and for the synthetic set 'meta' (the appearance JSON). Order is kept (no shuffling at
prepare time), so synthetic example i of a split is scene (seed, i).
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from typing import Any, Iterator, Optional

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from pix2pixhd_jax import storage
from pix2pixhd_jax.data import folders, synthetic


def _png(array: np.ndarray) -> bytes:
    """Encode a uint8 (H, W), (H, W, 1) or (H, W, 3) array as PNG bytes (TFDS stores them without TensorFlow)."""
    buf = io.BytesIO()
    Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array).save(buf, format="PNG")
    return buf.getvalue()


def _features(label_channels: int, with_inst: bool, with_meta: bool) -> tfds.features.FeaturesDict:
    """The stored feature spec shared by both builders."""
    spec: dict[str, Any] = {
        "label": tfds.features.Image(shape=(None, None, label_channels), dtype=np.uint8, encoding_format="png"),
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
    }
    if with_inst:
        spec["inst"] = tfds.features.Tensor(shape=(None, None), dtype=np.int32, encoding=tfds.features.Encoding.ZLIB)
    if with_meta:
        spec["meta"] = tfds.features.Text()
    return tfds.features.FeaturesDict(spec)


class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base for builders that ship no checksums/metadata files next to their code."""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> None:
        # TFDS would locate this module's folder (for checksums.tsv) through etils' resource
        # lookup, which needs the extra importlib_resources package; there is nothing to find.
        return None


class SyntheticStreetsConfig(tfds.core.BuilderConfig):
    """Size and split sizes of a prepared synthetic set."""

    def __init__(self, *, width: int, height: int, num_train: int, num_test: int, seed: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        self.width, self.height, self.num_train, self.num_test, self.seed = width, height, num_train, num_test, seed


class SyntheticStreets(_LocalBuilder):
    """Procedural street scenes in Cityscapes ids (train: seed, test: seed + 1)."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
        SyntheticStreetsConfig(name="512x256", width=512, height=256, num_train=3000, num_test=500),
        SyntheticStreetsConfig(name="1024x512", width=1024, height=512, num_train=3000, num_test=500),
        SyntheticStreetsConfig(name="2048x1024", width=2048, height=1024, num_train=3000, num_test=500),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo directly: dataset_info_from_configs would look for metadata files next to this module.
        return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=_features(1, True, True),
                                     disable_shuffling=True)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        c = self.builder_config
        return {"train": self._generate_examples(c.seed, c.num_train), "test": self._generate_examples(c.seed + 1, c.num_test)}

    def _generate_examples(self, seed: int, num: int) -> Iterator[tuple[int, dict[str, Any]]]:
        c = self.builder_config
        for i in range(num):
            ex = synthetic.generate_example(seed, i, c.width, c.height)
            yield i, {"label": _png(ex["label"][..., None]), "inst": ex["inst"], "image": _png(ex["image"]),
                      "meta": json.dumps(ex["meta"])}


class PairedFoldersConfig(tfds.core.BuilderConfig):
    """Which layout the manual directory holds and how labels are stored."""

    def __init__(self, *, layout: str, label_nc: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.layout, self.label_nc = layout, label_nc


class PairedFolders(_LocalBuilder):
    """A pix2pixHD folder dataset or Cityscapes, from a manual directory, with its files validated."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put the data in the manual directory (--manual_dir), either in pix2pixHD's layout
    ({phase}_label/, {phase}_inst/, {phase}_img/ for phases train/test/val; _A/_B for official_rgb)
    or, for the cityscapes config, Cityscapes' gtFine/ and leftImg8bit/ folders
    (gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip unpacked).
    """
    BUILDER_CONFIGS = [
        PairedFoldersConfig(name="official", layout="official", label_nc=35),
        PairedFoldersConfig(name="official_rgb", layout="official", label_nc=0),
        PairedFoldersConfig(name="cityscapes", layout="cityscapes", label_nc=35),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        rgb = self.builder_config.label_nc == 0
        return tfds.core.DatasetInfo(builder=self, description=self.__doc__,
                                     features=_features(3 if rgb else 1, not rgb, False), disable_shuffling=True)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        root = os.fspath(dl_manager.manual_dir)
        c = self.builder_config
        splits = {}
        for split in ("train", "val", "test"):
            if c.layout == "cityscapes":
                if storage.isdir(storage.join(root, "gtFine", split)):
                    splits[split] = folders.CityscapesSource(root, split, label_nc=c.label_nc)
            else:
                prefix = "_label" if c.label_nc > 0 else "_A"
                if storage.isdir(storage.join(root, split + prefix)):
                    splits[split] = folders.OfficialFolderSource(root, split, label_nc=c.label_nc,
                                                                 use_instance=c.label_nc > 0)
        if not splits:
            raise folders.DataError(f"no {c.layout} splits found under {root}\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        return {name: self._generate_examples(src) for name, src in splits.items()}

    def _generate_examples(self, source: Any) -> Iterator[tuple[int, dict[str, Any]]]:
        for i in range(len(source)):
            ex = source[i]  # reads and validates, so bad files fail at prepare time with their name
            label = ex["label"]
            if label.ndim == 2:
                if label.max(initial=0) > 255:
                    raise folders.DataError(f"label ids > 255 in {source.files(i)['label']} do not fit an 8-bit PNG")
                label = label.astype(np.uint8)[..., None]
            out = {"label": _png(label), "image": _png(ex["image"])}
            if "inst" in ex:
                out["inst"] = ex["inst"]
            yield i, out


class TfdsSource:
    """Random access to a prepared split in this package's example convention (grain-ready)."""

    def __init__(self, name: str, split: str = "train", *, data_dir: str | None = None):
        self._ds = tfds.data_source(name, split=split, data_dir=data_dir)
        self.name, self.split = name, split

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        ex = self._ds[int(index)]
        label = ex["label"]
        out = {"label": label[..., 0] if label.shape[-1] == 1 else label, "image": ex["image"]}
        if "inst" in ex:
            out["inst"] = np.asarray(ex["inst"], np.int32)
        return out

    def __repr__(self) -> str:
        return f"TfdsSource({self.name!r}, split={self.split!r}, n={len(self)})"


def small_synthetic(dataset: str, num_train: int, num_test: int) -> Optional[SyntheticStreetsConfig]:
    """A synthetic_streets config with fewer examples (named e.g. '512x256_n100_20'), or None for the full set."""
    if not (num_train or num_test):
        return None
    name, _, size = dataset.partition("/")
    base = next((c for c in SyntheticStreets.BUILDER_CONFIGS if c.name == size), None)
    if name != "synthetic_streets" or base is None:
        sizes = ", ".join(c.name for c in SyntheticStreets.BUILDER_CONFIGS)
        raise ValueError(f"--num_train / --num_test make a small synthetic_streets set (synthetic_streets/<size>, "
                         f"size one of {sizes}), not {dataset!r}")
    n_train, n_test = num_train or base.num_train, num_test or base.num_test
    return SyntheticStreetsConfig(name=f"{size}_n{n_train}_{n_test}", width=base.width, height=base.height,
                                  num_train=n_train, num_test=n_test, seed=base.seed)


def prepare(dataset: str, *, data_dir: str | None = None, manual_dir: str | None = None, num_train: int = 0,
            num_test: int = 0) -> tfds.core.DatasetBuilder:
    """Prepare `dataset` ('synthetic_streets/512x256', 'paired_folders/cityscapes', ...) as ArrayRecord.

    num_train / num_test (synthetic sets) prepare fewer examples under their own config name
    (`builder.info.full_name` says which). A gs:// `data_dir` is prepared in a local temporary folder
    (array_record's writer needs a local file) and uploaded file by file; the builder returned
    reads from `data_dir`. TFDS's own temporary files go inside that folder, so nothing is left behind.
    """
    small = small_synthetic(dataset, num_train, num_test)
    remote = bool(data_dir) and storage.is_remote(data_dir)
    if remote:
        storage.check_backend(data_dir)
    with tempfile.TemporaryDirectory(prefix="tfds_prepare_") as scratch:
        local_dir = os.path.join(scratch, "data") if remote else data_dir
        # TFDS makes (and keeps) a temporary folder when it builds a builder for unprepared data: in scratch.
        previous, tempfile.tempdir = tempfile.tempdir, scratch
        try:
            builder = _builder(dataset, small, local_dir)
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        finally:
            tempfile.tempdir = previous
        if remote:
            storage.copytree(local_dir, data_dir)
    return _builder(dataset, small, data_dir) if remote else builder


def _builder(dataset: str, small: Optional[SyntheticStreetsConfig], data_dir: Optional[str]) -> tfds.core.DatasetBuilder:
    if small is not None:
        return SyntheticStreets(config=small, data_dir=data_dir, file_format="array_record")
    return tfds.builder(dataset, data_dir=data_dir, file_format="array_record")
