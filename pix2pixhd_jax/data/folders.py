"""Folder datasets: pix2pixHD's official layout and Cityscapes' native layout, as random-access sources.

Official layout (pix2pixHD `data/aligned_dataset.py`), under `root`:
  {phase}_label/  label ids, 8-bit 'L' PNG          ({phase}_A/ RGB inputs when label_nc == 0)
  {phase}_inst/   instance ids, 16-bit 'I;16' PNG   (read only when use_instance)
  {phase}_img/    photos, RGB                       ({phase}_B/ when label_nc == 0)
Files are found recursively and paired by name: the path inside the folder without its extension
and without Cityscapes' kind suffix (`_gtFine_labelIds`, `_gtFine_instanceIds`, `_leftImg8bit`,
as in the official repository's sample data). The official loader pairs by sorted position, which
silently mispairs every later file once one is missing and another is extra; here any name without
a partner in every folder is an error listing the unmatched names.

Cityscapes layout, under `root`:
  gtFine/{split}/{city}/{key}_gtFine_labelIds.png, {key}_gtFine_instanceIds.png
  leftImg8bit/{split}/{city}/{key}_leftImg8bit.png
paired by `key` (city_sequence_frame); a key missing any of its files is an error.

Every example is {'label': (H, W) uint8/int32 ids (or (H, W, 3) uint8 when label_nc == 0),
'inst': (H, W) int32 (when use_instance), 'image': (H, W, 3) uint8 (when load_image)}.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from pix2pixhd_jax import storage

# pix2pixHD's IMG_EXTENSIONS (compared case-insensitively here).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tiff")
# Kind suffixes dropped from names before pairing (Cityscapes files copied into the official layout).
PAIRING_SUFFIXES = ("_gtFine_labelIds", "_gtFine_instanceIds", "_leftImg8bit")


class DataError(ValueError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""


def is_image_file(name: str) -> bool:
    """Whether `name` has one of pix2pixHD's image extensions."""
    return name.lower().endswith(IMG_EXTENSIONS)


def list_images(folder: str) -> list[str]:
    """All image files under `folder` (recursive), sorted by path as pix2pixHD pairs them."""
    if not storage.isdir(folder):
        raise DataError(f"folder {folder} does not exist")
    found = [storage.join(dirpath, f) for dirpath, _, files in storage.walk(folder) for f in files if is_image_file(f)]
    return sorted(found)


def pairing_key(folder: str, path: str) -> str:
    """The name files are paired by: relative path, no extension, no PAIRING_SUFFIXES suffix."""
    key = os.path.splitext(os.path.relpath(path, folder))[0]
    for suffix in PAIRING_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


def _keyed(folder: str, paths: Sequence[str]) -> dict[str, str]:
    """pairing key -> path for the files of one folder; two files with one key are an error."""
    out: dict[str, str] = {}
    for path in paths:
        key = pairing_key(folder, path)
        if key in out:
            raise DataError(f"{out[key]} and {path} pair under the same name {key!r}; keep one of them")
        out[key] = path
    return out


def pair_by_name(label_dir: str, labels: Sequence[str],
                 others: dict[str, tuple[str, Sequence[str]]]) -> dict[str, list[str]]:
    """Each folder's files in the order of `labels`, matched by pairing_key; unmatched names raise DataError.

    others: kind -> (folder, its files). Returns kind -> paths aligned with labels.
    """
    label_keys = _keyed(label_dir, labels)
    out, problems = {}, []
    for kind, (folder, paths) in others.items():
        keyed = _keyed(folder, paths)
        missing = [label_keys[k] for k in label_keys if k not in keyed]
        extra = [keyed[k] for k in keyed if k not in label_keys]
        if missing:
            problems.append(f"no {kind} file in {folder} for {len(missing)} label file(s): "
                            + ", ".join(os.path.relpath(p, label_dir) for p in missing[:8])
                            + (" ..." if len(missing) > 8 else ""))
        if extra:
            problems.append(f"no label file in {label_dir} for {len(extra)} {kind} file(s): "
                            + ", ".join(os.path.relpath(p, folder) for p in extra[:8])
                            + (" ..." if len(extra) > 8 else ""))
        out[kind] = [keyed.get(k, "") for k in label_keys]
    if problems:
        raise DataError("files are paired by name (path without extension and without "
                        f"{'/'.join(PAIRING_SUFFIXES)}), and some have no partner:\n  " + "\n  ".join(problems)
                        + "\nAdd or rename the files so that every folder holds the same names.")
    return out


def _open(path: str) -> Image.Image:
    """Open and fully decode an image, turning any decoder failure into a DataError naming the file."""
    try:
        with storage.open(path, "rb") as f:  # local or gs://
            img = Image.open(f)
            img.load()
    except FileNotFoundError:
        raise DataError(f"missing file {path}") from None
    except Exception as e:  # PIL raises several types for truncated or corrupt files
        raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
    return img


def read_label(path: str) -> np.ndarray:
    """Read a single-channel label-id map ('L', 'P', 'I;16' or 'I') as (H, W) uint8/int32 ids."""
    img = _open(path)
    if img.mode in ("L", "P"):
        return np.asarray(img, np.uint8)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(img).astype(np.int32)
    raise DataError(f"label map {path} has mode {img.mode}; expected single-channel ids (L, P, I;16 or I). "
                    "For RGB inputs use label_nc=0 and the {phase}_A folder.")


def read_instance(path: str) -> np.ndarray:
    """Read an instance-id map keeping 16-bit ids (e.g. 26003) as (H, W) int32."""
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "L", "P"):
        return np.asarray(img).astype(np.int32)
    raise DataError(f"instance map {path} has mode {img.mode}; expected single-channel ids (I;16, I or L)")


def read_rgb(path: str) -> np.ndarray:
    """Read a photo (or RGB input map) as (H, W, 3) uint8."""
    return np.asarray(_open(path).convert("RGB"), np.uint8)


def _write_ids(path: str, ids: np.ndarray, kind: str, dtype: type) -> None:
    """Write integer ids as a PNG of `dtype` (uint8: 'L', uint16: 'I;16'), refusing ids it cannot hold."""
    ids, limits = np.asarray(ids), np.iinfo(dtype)
    if ids.min(initial=0) < 0 or ids.max(initial=0) > limits.max:
        raise DataError(f"{kind} ids for {path} must be in [0, {limits.max}] (a {limits.bits}-bit PNG), got "
                        f"[{ids.min()}, {ids.max()}]")
    storage.write_image(path, Image.fromarray(ids.astype(dtype)))


def write_label(path: str, label: np.ndarray) -> None:
    """Write label ids as an 8-bit 'L' PNG (ids must be < 256)."""
    _write_ids(path, label, "label", np.uint8)


def write_instance(path: str, inst: np.ndarray) -> None:
    """Write instance ids as a 16-bit 'I;16' PNG so ids like 26003 survive."""
    _write_ids(path, inst, "instance", np.uint16)


def write_rgb(path: str, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image (PNG is lossless; the extension picks the format)."""
    storage.write_image(path, Image.fromarray(np.asarray(image, np.uint8), "RGB"))


def write_official_example(root: str, phase: str, name: str, example: dict[str, Any]) -> None:
    """Write one example into the official layout ({phase}_label/_inst/_img, optional _meta JSON)."""
    write_label(storage.join(root, f"{phase}_label", name + ".png"), example["label"])
    write_instance(storage.join(root, f"{phase}_inst", name + ".png"), example["inst"])
    write_rgb(storage.join(root, f"{phase}_img", name + ".png"), example["image"])
    if "meta" in example:
        meta = example["meta"]
        storage.write_text(storage.join(root, f"{phase}_meta", name + ".json"),
                           meta if isinstance(meta, str) else json.dumps(meta))


def validate_example(example: dict[str, Any], *, label_nc: int, files: dict[str, str]) -> None:
    """Raise DataError naming the file when ids exceed label_nc or the maps' sizes differ."""
    label = example["label"]
    if label_nc > 0:
        if label.ndim != 2:
            raise DataError(f"label map {files.get('label')} has shape {label.shape}; expected (H, W) ids")
        top = int(label.max(initial=0))
        if top >= label_nc:
            raise DataError(f"label {top} in {files.get('label')} >= label_nc={label_nc}; "
                            f"raise label_nc or remap the ids")
    size = label.shape[:2]
    for key in ("inst", "image"):
        if key in example and example[key].shape[:2] != size:
            raise DataError(f"size mismatch: {files.get(key)} is {example[key].shape[1]}x{example[key].shape[0]} "
                            f"but {files.get('label')} is {size[1]}x{size[0]} (width x height)")
    if "inst" in example and int(example["inst"].min(initial=0)) < 0:
        raise DataError(f"negative instance id in {files.get('inst')}")


def describe_example(source: Any, index: int) -> str:
    """The files of example `index` when the source knows them (folder sources), else 'example i of <source>'."""
    files = getattr(source, "files", None)
    if callable(files):
        return " + ".join(files(index).values())
    return f"example {index} of {source!r}"


class _PairedSource:
    """Random access over aligned lists of label / instance / image paths, read on demand."""

    def __init__(self, labels: Sequence[str], insts: Sequence[str] | None, images: Sequence[str] | None,
                 *, label_nc: int):
        self._labels, self._insts, self._images, self.label_nc = list(labels), insts, images, label_nc

    def __len__(self) -> int:
        return len(self._labels)

    def files(self, index: int) -> dict[str, str]:
        """Paths of example `index` by key ('label', 'inst', 'image')."""
        out = {"label": self._labels[index]}
        if self._insts is not None:
            out["inst"] = self._insts[index]
        if self._images is not None:
            out["image"] = self._images[index]
        return out

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        files = self.files(int(index))
        ex = {"label": read_label(files["label"]) if self.label_nc > 0 else read_rgb(files["label"])}
        if "inst" in files:
            ex["inst"] = read_instance(files["inst"])
        if "image" in files:
            ex["image"] = read_rgb(files["image"])
        validate_example(ex, label_nc=self.label_nc, files=files)
        return ex


class OfficialFolderSource(_PairedSource):
    """pix2pixHD's `{phase}_label/_inst/_img` (or `_A/_B`) folders, paired by name (pairing_key)."""

    def __init__(self, root: str, phase: str = "train", *, label_nc: int = 35, use_instance: bool = True,
                 load_image: bool | None = True, max_dataset_size: int | None = None):
        """load_image: True requires the photo folder, False ignores it, None reads it when present."""
        label_dir = storage.join(root, f"{phase}_label" if label_nc > 0 else f"{phase}_A")
        labels = list_images(label_dir)
        if not labels:
            raise DataError(f"no images ({', '.join(IMG_EXTENSIONS)}) found under {label_dir}")
        inst_dir = storage.join(root, f"{phase}_inst")
        if use_instance and not storage.isdir(inst_dir):
            raise DataError(f"use_instance is on but {inst_dir} is missing; "
                            "add instance maps or turn use_instance off (official --no_instance)")
        insts = list_images(inst_dir) if use_instance else None
        image_dir = storage.join(root, f"{phase}_img" if label_nc > 0 else f"{phase}_B")
        if load_image is None:
            load_image = storage.isdir(image_dir)
        images = list_images(image_dir) if load_image else None
        others = {kind: (folder, files) for kind, folder, files in (("instance", inst_dir, insts),
                                                                   ("image", image_dir, images)) if files is not None}
        paired = pair_by_name(label_dir, labels, others)
        insts, images = paired.get("instance"), paired.get("image")
        if max_dataset_size is not None:
            labels = labels[:max_dataset_size]
            insts = insts[:max_dataset_size] if insts is not None else None
            images = images[:max_dataset_size] if images is not None else None
        super().__init__(labels, insts, images, label_nc=label_nc)
        self.root, self.phase = root, phase

    def __repr__(self) -> str:
        return f"OfficialFolderSource({self.root!r}, phase={self.phase!r}, n={len(self)})"


def _cityscapes_keys(folder: str, suffix: str) -> dict[str, str]:
    """Map key (city_seq_frame) -> path for files ending in `suffix` under `folder` (recursive)."""
    if not storage.isdir(folder):
        raise DataError(f"Cityscapes folder {folder} does not exist")
    out = {}
    for dirpath, _, files in storage.walk(folder):
        for f in files:
            if f.endswith(suffix):
                out[f[: -len(suffix)]] = storage.join(dirpath, f)
    return out


class CityscapesSource(_PairedSource):
    """Cityscapes' native gtFine/leftImg8bit layout for one split, paired by frame key."""

    def __init__(self, root: str, split: str = "train", *, label_nc: int = 35, use_instance: bool = True,
                 load_image: bool | None = True, max_dataset_size: int | None = None):
        if label_nc <= 0:
            raise DataError("Cityscapes provides label ids; label_nc must be > 0 (35 for pix2pixHD)")
        gt, left = storage.join(root, "gtFine", split), storage.join(root, "leftImg8bit", split)
        labels = _cityscapes_keys(gt, "_gtFine_labelIds.png")
        if not labels:
            raise DataError(f"no *_gtFine_labelIds.png files under {gt}")
        keys = sorted(labels)
        insts = _cityscapes_keys(gt, "_gtFine_instanceIds.png") if use_instance else None
        if load_image is None:  # photos only where the split has them (inference on label maps)
            load_image = storage.isdir(left)
        images = _cityscapes_keys(left, "_leftImg8bit.png") if load_image else None
        for what, found, where in (("_gtFine_instanceIds.png", insts, gt), ("_leftImg8bit.png", images, left)):
            if found is not None:
                missing = [k for k in keys if k not in found]
                if missing:
                    raise DataError(f"{len(missing)} frames have no {what} under {where}, e.g. {missing[0]}{what}")
        keys = keys[:max_dataset_size] if max_dataset_size is not None else keys
        super().__init__([labels[k] for k in keys], [insts[k] for k in keys] if insts is not None else None,
                         [images[k] for k in keys] if images is not None else None, label_nc=label_nc)
        self.root, self.split, self.keys = root, split, keys

    def __repr__(self) -> str:
        return f"CityscapesSource({self.root!r}, split={self.split!r}, n={len(self)})"
