"""pix2pixHD's geometric transforms (data/base_dataset.py), one set of random parameters per example.

The same resize, crop and flip are applied to the label map, the instance map and the photo:
NEAREST for ids (label, instance) so no id is ever invented, BICUBIC for photos (and for RGB
input maps when label_nc == 0), then the photo is normalised to [-1, 1].

resize_or_crop modes and the size they produce from an input of W x H:
  resize_and_crop       resize to load_size x load_size, random fine_size x fine_size crop
  crop                  random fine_size x fine_size crop, no resize
  scale_width           width load_size, height int(load_size * H / W)
  scale_width_and_crop  scale_width, then a random fine_size x fine_size crop
  none                  W, H each rounded to a multiple of size_divisor
                        (2 ** (n_downsample_global + n_local_enhancers) for the local generator)
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from PIL import Image

from pix2pixhd_jax.data.folders import DataError

RESIZE_OR_CROP_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")


@dataclasses.dataclass(frozen=True)
class TransformConfig:
    """The official data options (option names kept: loadSize, fineSize, resize_or_crop, no_flip)."""

    resize_or_crop: str = "scale_width"
    load_size: int = 1024
    fine_size: int = 512
    no_flip: bool = False
    size_divisor: int = 1  # the generator's total downsampling; output sizes must be multiples of it
    label_nc: int = 35  # 0: the label is an RGB image, resized bicubic and normalised like the photo
    recolour_p: float = 0.0  # training only: chance that an object of recolour_classes takes a random colour
    recolour_classes: tuple[int, ...] = ()  # label ids whose instances (ids class*1000+k) may be recoloured

    def __post_init__(self) -> None:
        if self.resize_or_crop not in RESIZE_OR_CROP_MODES:
            raise ValueError(f"resize_or_crop={self.resize_or_crop!r}; expected one of {RESIZE_OR_CROP_MODES}")
        if self.size_divisor < 1 or self.load_size < 1 or self.fine_size < 1:
            raise ValueError("load_size, fine_size and size_divisor must be positive")
        if not 0.0 <= self.recolour_p <= 1.0:
            raise ValueError(f"data.recolour_p={self.recolour_p} is a probability: give a value in [0, 1]")


def size_divisor(net_g: str, n_downsample_global: int, n_local_enhancers: int) -> int:
    """The generator's total downsampling (official 'none' mode base): sizes must be multiples of it."""
    return 2 ** n_downsample_global * (2 ** n_local_enhancers if net_g == "local" else 1)


def resized_size(width: int, height: int, cfg: TransformConfig) -> tuple[int, int]:
    """(width, height) after the resize step, before any crop (official get_params/get_transform)."""
    mode = cfg.resize_or_crop
    if mode == "resize_and_crop":
        return cfg.load_size, cfg.load_size
    if mode.startswith("scale_width"):
        if width == cfg.load_size:
            return width, height
        return cfg.load_size, int(cfg.load_size * height / width)
    if mode == "none":
        # Python's round() as in the official __make_power_2 (ties to even).
        base = cfg.size_divisor
        return int(round(width / base) * base), int(round(height / base) * base)
    return width, height


def output_size(width: int, height: int, cfg: TransformConfig) -> tuple[int, int]:
    """(width, height) of a transformed example; raises DataError if the generator cannot take it."""
    w, h = resized_size(width, height, cfg)
    if "crop" in cfg.resize_or_crop:
        if w < cfg.fine_size or h < cfg.fine_size:
            # The official loader would silently pad with black here (PIL crop past the border).
            raise DataError(f"{cfg.resize_or_crop}: a {cfg.fine_size}x{cfg.fine_size} crop does not fit in the "
                            f"{w}x{h} resized image (input {width}x{height}); lower fine_size or raise load_size")
        w = h = cfg.fine_size
    if w <= 0 or h <= 0 or w % cfg.size_divisor or h % cfg.size_divisor:
        raise DataError(f"transformed size {w}x{h} (input {width}x{height}, resize_or_crop={cfg.resize_or_crop}) "
                        f"is not a positive multiple of size_divisor={cfg.size_divisor} as the generator needs; "
                        "choose load_size/fine_size multiples of it or resize_or_crop='none'")
    return w, h


def sample_params(width: int, height: int, cfg: TransformConfig, rng: np.random.Generator | None,
                  train: bool = True) -> dict[str, Any]:
    """Draw one example's crop position and flip (official get_params); rng None means no randomness."""
    w, h = resized_size(width, height, cfg)
    output_size(width, height, cfg)  # validate before drawing
    x = y = 0
    if "crop" in cfg.resize_or_crop and rng is not None:
        x = int(rng.integers(0, max(0, w - cfg.fine_size) + 1))
        y = int(rng.integers(0, max(0, h - cfg.fine_size) + 1))
    flip = bool(train and not cfg.no_flip and rng is not None and rng.random() > 0.5)
    return {"resize": (w, h), "crop_pos": (x, y), "flip": flip}


def resize_nearest(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """NEAREST resize of an (H, W[, C]) array sampling at pixel centres (PIL's rule up to float ties); ids stay exact."""
    h, w = arr.shape[:2]
    if (w, h) == (width, height):
        return arr
    rows = np.minimum(((np.arange(height) + 0.5) * (h / height)).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (w / width)).astype(np.int64), w - 1)
    return arr[rows[:, None], cols[None, :]]


def resize_bicubic(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """BICUBIC resize of an (H, W, 3) uint8 image through PIL (the official photo resampling)."""
    if img.shape[1] == width and img.shape[0] == height:
        return img
    return np.asarray(Image.fromarray(img).resize((width, height), Image.BICUBIC))


def apply_params(example: dict[str, Any], params: dict[str, Any], cfg: TransformConfig) -> dict[str, Any]:
    """Resize, crop and flip every map of `example` identically; returns model-ready arrays.

    label -> int32 (H, W) ids (float32 (H, W, 3) in [-1, 1] when label_nc == 0),
    inst -> int32 (H, W), image -> float32 (H, W, 3) in [-1, 1]; other keys pass through.
    """
    w, h = params["resize"]
    x, y = params["crop_pos"]
    crop = "crop" in cfg.resize_or_crop

    def geometry(arr: np.ndarray, ids: bool) -> np.ndarray:
        arr = resize_nearest(arr, w, h) if ids else resize_bicubic(arr, w, h)
        if crop:
            arr = arr[y:y + cfg.fine_size, x:x + cfg.fine_size]
        return arr[:, ::-1] if params["flip"] else arr

    out = dict(example)
    if cfg.label_nc > 0:
        out["label"] = np.ascontiguousarray(geometry(example["label"], True), np.int32)
    else:
        out["label"] = geometry(example["label"], False).astype(np.float32) / 127.5 - 1.0
    if "inst" in example:
        out["inst"] = np.ascontiguousarray(geometry(example["inst"], True), np.int32)
    if "image" in example:
        out["image"] = geometry(example["image"], False).astype(np.float32) / 127.5 - 1.0
    return out


def recolour_instances(image: np.ndarray, inst: np.ndarray, classes: tuple[int, ...], p: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Each object of `classes` in an (H, W, 3) [-1, 1] photo, with chance p, moved to a random mean colour.

    The object's mean becomes the drawn colour exactly; its shading (windows darker than the body)
    is kept, scaled down per channel only as far as needed to stay inside [-1, 1]. Beyond the paper:
    a dataset's objects come in a few colours, and a colour-anchored generator
    (loss.lambda_feature_colour) only renders the colours it was trained on; random colours teach it
    the whole cube, faces included, so a saturated colour the editor's picker asks for is rendered.
    (A shift clipped to [-1, 1] instead pulls a saturated mean back inside the cube.)
    """
    out = image
    for obj in np.unique(inst):
        if obj < 1000 or obj // 1000 not in classes or rng.random() >= p:
            continue
        mask = inst == obj
        target = rng.uniform(-1.0, 1.0, 3).astype(image.dtype)
        if out is image:
            out = image.copy()
        out[mask] = shaded_to_mean(out[mask], target)
    return out


def shaded_to_mean(pixels: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N, 3) [-1, 1] pixels with mean `target`: their deviations from their mean, per channel scaled by
    the largest factor <= 1 that keeps every value inside [-1, 1]."""
    shading = pixels - pixels.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        room_up = np.where(shading.max(axis=0) > 0, (1.0 - target) / shading.max(axis=0), np.inf)
        room_down = np.where(shading.min(axis=0) < 0, (-1.0 - target) / shading.min(axis=0), np.inf)
    scale = np.minimum(1.0, np.minimum(room_up, room_down)).astype(pixels.dtype)
    return np.clip(target + shading * scale, -1.0, 1.0)  # the clip only trims float rounding


def transform_example(example: dict[str, Any], cfg: TransformConfig, rng: np.random.Generator | None,
                      train: bool = True) -> dict[str, Any]:
    """Draw parameters for this example and apply them to all of its maps (in training: recolouring too)."""
    h, w = example["label"].shape[:2]
    out = apply_params(example, sample_params(w, h, cfg, rng, train), cfg)
    if train and rng is not None and cfg.recolour_p > 0 and "image" in out and "inst" in out:
        out["image"] = recolour_instances(out["image"], out["inst"], cfg.recolour_classes, cfg.recolour_p, rng)
    return out
