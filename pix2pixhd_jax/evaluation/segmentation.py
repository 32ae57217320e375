"""Segmentation score (the pix2pixHD paper's protocol): a segmenter trained on real photos labels fakes.

A compact U-Net is trained on the REAL images of a dataset split (image -> label map, softmax
cross-entropy). To score a generator, the segmenter labels images synthesized from a split's label
maps, and its predictions are compared with those INPUT label maps: pixel accuracy and mean IoU.
The same numbers on the real photos of that split are the ceiling (what the segmenter reaches on
images it was built for).

  python -m pix2pixhd_jax.cli.train_segmenter --config=configs/synthetic_demo.py --out=runs/seg \
      [--config.eval.segmenter.steps=3000]
  python -m pix2pixhd_jax.cli.evaluate --workdir=runs/demo --segmenter=runs/seg

Training the segmenter lives in segmenter_training.py; this module is the network, the metrics
and the saved format.

The segmenter directory holds `params.npz` (the flattened parameter pytree; read with
allow_pickle=False) and `segmenter.json` (network, classes, training data and held-out scores);
loading it for a run whose data or label set differ is refused with the difference named.

Metrics come from a (K, K) confusion matrix (rows: target class, columns: prediction) accumulated
over batches by a jitted function. Pixel accuracy = trace / total; IoU_c = C_cc / (row_c + col_c
- C_cc) for every class c present in the targets or the predictions; mean IoU averages those.
Pixels whose label is not in `classes` (or >= label_nc) are ignored in the loss and the metrics;
predictions are restricted to `classes`.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any, Iterable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util
from tqdm import tqdm

from pix2pixhd_jax import storage
from pix2pixhd_jax.data import cityscapes as cs

FORMAT_VERSION = 1
PARAMS_FILE = "params.npz"
SPEC_FILE = "segmenter.json"
# Fields of the saved data description that must equal the evaluated run's for the score to mean anything.
DATA_IDENTITY_KEYS = ("source", "dataset", "label_nc", "classes", "height", "width")


@dataclasses.dataclass(frozen=True)
class SegmenterOptions:
    """What segmenter training and the segmentation score read from a config, read once."""

    features: int  # eval.segmenter.*: the U-Net and its training
    levels: int
    classes: tuple[int, ...]  # as configured: () = all of 0..label_nc-1 (resolve_classes)
    steps: int
    batch_size: int
    lr: float
    seed: int
    num_examples: int  # synthetic training scenes (0 = synthetic_num)
    heldout_examples: int
    log_every: int
    label_nc: int  # model.label_nc
    source: str  # data.*: what the segmenter trains on, and what an evaluated run must share
    dataset: str
    phase: str
    synthetic_num: int
    synthetic_seed: int
    skip_bad_examples: bool
    heldout_split: str  # eval.split

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "SegmenterOptions":
        s, d = config.eval.segmenter, config.data
        if d.source == "synthetic":
            dataset = "synthetic"
        elif d.source == "tfds":
            dataset = d.tfds_name
        else:
            dataset = os.fspath(storage.path(d.dataroot))  # gs:// URLs kept as they are
        return cls(features=int(s.features), levels=int(s.levels), classes=tuple(int(c) for c in s.classes),
                   steps=int(s.steps), batch_size=int(s.batch_size), lr=float(s.lr), seed=int(s.seed),
                   num_examples=int(s.num_examples), heldout_examples=int(s.heldout_examples),
                   log_every=int(s.log_every), label_nc=int(config.model.label_nc), source=d.source,
                   dataset=dataset, phase=d.phase, synthetic_num=int(d.synthetic_num),
                   synthetic_seed=int(d.synthetic_seed),
                   skip_bad_examples=bool(d.skip_bad_examples), heldout_split=config.eval.split)


# ------------------------------------------------------------------------------------- network
class ConvBlock(nn.Module):
    """Two (3x3 conv, GroupNorm, ReLU) layers."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(2):
            x = nn.Conv(self.features, (3, 3), padding="SAME", name=f"conv{i}")(x)
            x = nn.GroupNorm(num_groups=min(8, self.features), name=f"norm{i}")(x)
            x = nn.relu(x)
        return x


def _upsample2x(x: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x upsampling (its backward is a reshape-sum, fast on every backend)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class UNet(nn.Module):
    """Encoder-decoder with skip connections: `levels` 2x max-pool stages, width doubling per stage."""

    num_classes: int
    features: int = 32
    levels: int = 4

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x, skips = images, []
        for i in range(self.levels):
            x = ConvBlock(self.features * 2 ** i, name=f"down{i}")(x)
            skips.append(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = ConvBlock(self.features * 2 ** self.levels, name="bottom")(x)
        for i in reversed(range(self.levels)):
            x = nn.Conv(self.features * 2 ** i, (3, 3), padding="SAME", name=f"up{i}_conv")(_upsample2x(x))
            x = ConvBlock(self.features * 2 ** i, name=f"up{i}")(jnp.concatenate([x, skips[i]], axis=-1))
        return nn.Conv(self.num_classes, (1, 1), name="logits")(x)


# ------------------------------------------------------------------------------------- classes
def resolve_classes(classes: Sequence[int], label_nc: int) -> tuple[int, ...]:
    """The label ids the segmenter predicts: `classes`, or all of 0..label_nc-1 when empty."""
    if label_nc <= 0:
        raise ValueError("the segmentation score needs label maps of class ids (model.label_nc > 0); "
                         "label_nc=0 (RGB label images) has no classes to score")
    out = tuple(int(c) for c in classes) if classes else tuple(range(label_nc))
    bad = [c for c in out if not 0 <= c < label_nc]
    if bad or len(set(out)) != len(out):
        raise ValueError(f"eval.segmenter.classes={tuple(classes)}: ids must be distinct and in "
                         f"[0, label_nc={label_nc})"
                         f"{'; bad: ' + str(bad) if bad else ''}")
    return out


def label_lookup(classes: Sequence[int], size: int = 256) -> np.ndarray:
    """(size,) int32 table: label id -> class index in `classes`, -1 (ignored) for any other id."""
    lut = np.full(max(size, max(classes) + 1), -1, np.int32)
    lut[np.asarray(classes)] = np.arange(len(classes), dtype=np.int32)
    return lut


def to_targets(labels: jax.Array, lut: jax.Array) -> jax.Array:
    """Label ids (B, H, W) -> class indices, -1 where ignored (ids outside the table included)."""
    labels = labels.astype(jnp.int32)
    inside = (labels >= 0) & (labels < lut.shape[0])
    return jnp.where(inside, lut[jnp.clip(labels, 0, lut.shape[0] - 1)], -1)


# ------------------------------------------------------------------------------------- metrics
def confusion_matrix(targets: jax.Array, preds: jax.Array, num_classes: int) -> jax.Array:
    """(K, K) int32 counts of (target, prediction) pairs; targets < 0 are ignored. jit-friendly."""
    valid = (targets >= 0) & (targets < num_classes)
    index = jnp.where(valid, targets * num_classes + preds, 0).reshape(-1)
    counts = jnp.bincount(index, weights=valid.reshape(-1).astype(jnp.int32), length=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(jnp.int32)


def scores_from_confusion(conf: np.ndarray, class_names: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Pixel accuracy, mean IoU over classes present in targets or predictions, per-class IoU."""
    conf = np.asarray(conf, np.float64)
    total = conf.sum()
    if total == 0:
        raise ValueError("the confusion matrix is empty: no pixel had a label in the scored classes")
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), np.nan)
    out: dict[str, Any] = {"pixel_acc": float(tp.sum() / total), "mean_iou": float(np.mean(iou[present]))}
    if class_names is not None:
        out["class_iou"] = {str(n): round(float(v), 4) for n, v, p in zip(class_names, iou, present) if p}
    return out


# ------------------------------------------------------------------------------------- segmenter
def _pad_to_multiple(images: jax.Array, multiple: int) -> jax.Array:
    """Edge-pad H and W up to multiples of `multiple` (the U-Net's total downsampling)."""
    h, w = images.shape[1:3]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        images = jnp.pad(images, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return images


def make_model(spec: Mapping[str, Any]) -> UNet:
    m = spec["model"]
    return UNet(num_classes=len(m["classes"]), features=m["features"], levels=m["levels"])


def predict_logits(model: UNet, params: Any, images: jax.Array) -> jax.Array:
    """(B, H, W, K) float32 logits for images in [-1, 1] of any size."""
    h, w = images.shape[1:3]
    logits = model.apply({"params": params}, _pad_to_multiple(images.astype(jnp.float32), 2 ** model.levels))
    return logits[:, :h, :w].astype(jnp.float32)


class Segmenter:
    """A trained segmenter: `predict` label ids, `confusion` against label maps, `score` many batches."""

    def __init__(self, spec: Mapping[str, Any], params: Any):
        self.spec, self.params = dict(spec), params
        self.model = make_model(spec)
        self.classes = tuple(spec["model"]["classes"])
        self.lut = jnp.asarray(label_lookup(self.classes))
        self.class_ids = jnp.asarray(self.classes, jnp.int32)
        k = len(self.classes)
        model = self.model

        def confusion(params, lut, images, labels):
            preds = jnp.argmax(predict_logits(model, params, images), axis=-1)
            return confusion_matrix(to_targets(labels, lut), preds, k)

        def predict(params, class_ids, images):
            return class_ids[jnp.argmax(predict_logits(model, params, images), axis=-1)]

        self._confusion, self._predict = jax.jit(confusion), jax.jit(predict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_names(self) -> list[str]:
        cityscapes_ids = self.spec["data"].get("source") in ("synthetic", "cityscapes")
        return [cs.ID_TO_NAME.get(c, str(c)) if cityscapes_ids else str(c) for c in self.classes]

    def predict(self, images: Any) -> np.ndarray:
        """(B, H, W) int32 label ids for (B, H, W, 3) images in [-1, 1]."""
        return np.asarray(self._predict(self.params, self.class_ids, jnp.asarray(images)))

    def confusion(self, images: Any, labels: Any) -> np.ndarray:
        """(K, K) int64 confusion matrix of one batch against its label ids."""
        return np.asarray(self._confusion(self.params, self.lut, jnp.asarray(images), jnp.asarray(labels)), np.int64)

    def score(self, batches: Iterable[tuple[Any, Any]], *, progress: bool = False, desc: str = "segment") -> dict:
        """pixel_acc / mean_iou / class_iou over (images, labels) batches."""
        conf = np.zeros((self.num_classes, self.num_classes), np.int64)
        for images, labels in progress_bar(batches, progress, desc):
            conf += self.confusion(images, labels)
        return scores_from_confusion(conf, self.class_names())


def progress_bar(iterable: Iterable, enabled: bool, desc: str, total: Optional[int] = None) -> Iterable:
    """tqdm when installed and enabled, else the iterable unchanged."""
    if not enabled:
        return iterable
    return tqdm(iterable, desc=desc, total=total, dynamic_ncols=True, leave=False)


# ------------------------------------------------------------------------------- spec and I/O
def data_identity(config: ml_collections.ConfigDict, height: int, width: int,
                  classes: Sequence[int]) -> dict[str, Any]:
    """What a segmenter's training data must share with an evaluated run (DATA_IDENTITY_KEYS)."""
    o = SegmenterOptions.from_config(config)
    return {"source": o.source, "dataset": o.dataset, "label_nc": o.label_nc,
            "classes": [int(c) for c in classes], "height": int(height), "width": int(width)}


def make_spec(config: ml_collections.ConfigDict, height: int, width: int) -> dict[str, Any]:
    """The saved description: network, classes, training data and training hyperparameters."""
    o = SegmenterOptions.from_config(config)
    classes = resolve_classes(o.classes, o.label_nc)
    return {"format": FORMAT_VERSION,
            "model": {"features": o.features, "levels": o.levels, "classes": list(classes)},
            "data": {**data_identity(config, height, width, classes), "split": o.phase},
            "train": {"steps": o.steps, "batch_size": o.batch_size, "lr": o.lr, "seed": o.seed,
                      "num_examples": o.num_examples}}


def save_segmenter(directory: str, spec: Mapping[str, Any], params: Any) -> None:
    """Write params.npz (flattened pytree, '/'-joined names) and segmenter.json into `directory`."""
    flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(params)).items()}
    buf = io.BytesIO()
    np.savez(buf, **flat)
    storage.write_bytes(storage.join(directory, PARAMS_FILE), buf.getvalue())
    storage.write_text(storage.join(directory, SPEC_FILE), json.dumps(spec, indent=1))


def abstract_params(spec: Mapping[str, Any]) -> Any:
    """Shapes of the parameter tree a spec describes (no compute)."""
    levels = spec["model"]["levels"]
    size = 2 ** levels
    return jax.eval_shape(lambda: make_model(spec).init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))["params"]


def load_segmenter(directory: str, expect: Optional[Mapping[str, Any]] = None) -> Segmenter:
    """Restore a segmenter; with `expect` (a data_identity), refuse one trained for other data or classes."""
    spec_path, params_path = storage.join(directory, SPEC_FILE), storage.join(directory, PARAMS_FILE)
    if not storage.exists(spec_path) or not storage.exists(params_path):
        raise FileNotFoundError(
            f"{directory} holds no segmenter ({SPEC_FILE} + {PARAMS_FILE}); train one with "
            f"`python -m pix2pixhd_jax.cli.train_segmenter --config=<the run's config> --out={directory}`")
    spec = json.loads(storage.read_text(spec_path))
    if spec.get("format") != FORMAT_VERSION:
        raise ValueError(f"{spec_path}: format {spec.get('format')!r}, this code reads format {FORMAT_VERSION}; "
                         "retrain it")
    if expect is not None:
        check_compatible(spec, expect, spec_path)
    want = traverse_util.flatten_dict(abstract_params(spec))
    with storage.open(params_path, "rb") as f, np.load(f, allow_pickle=False) as z:
        got = {tuple(k.split("/")): z[k] for k in z.files}
    problems = [f"missing {'/'.join(k)}" for k in want if k not in got]
    problems += [f"unexpected {'/'.join(k)}" for k in got if k not in want]
    problems += [f"{'/'.join(k)}: shape {got[k].shape} != {want[k].shape}" for k in want
                 if k in got and got[k].shape != want[k].shape]
    if problems:
        raise ValueError(f"{params_path} does not match the network in {spec_path}: " + "; ".join(problems[:8])
                         + (f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""))
    params = traverse_util.unflatten_dict({k: jnp.asarray(v, jnp.float32) for k, v in got.items()})
    return Segmenter(spec, params)


def check_compatible(spec: Mapping[str, Any], expect: Mapping[str, Any], where: str = "the segmenter") -> None:
    """Raise ValueError naming every data field where the segmenter's training data differs from `expect`."""
    have = spec["data"]
    diffs = [f"{k}: segmenter {have.get(k)!r} vs run {expect.get(k)!r}" for k in DATA_IDENTITY_KEYS
             if k in expect and _norm(have.get(k)) != _norm(expect.get(k))]
    if diffs:
        raise ValueError(
            f"{where} was trained for other data than this run ({'; '.join(diffs)}). Its scores would not "
            "measure this generator; train a segmenter on this run's data: `python -m "
            "pix2pixhd_jax.cli.train_segmenter --config=<the run's config> --out=<new dir>`")


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
