"""Train the segmentation-score segmenter on the real photos of a run's data (see segmentation.py).

A compact U-Net, softmax cross-entropy over config.eval.segmenter.classes, Adam with cosine decay;
after training it scores held-out real images (the ceiling a generator's fakes are compared with)
and saves itself with its spec.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from pix2pixhd_jax import inputs
from pix2pixhd_jax.data import pipeline
from pix2pixhd_jax.evaluation.segmentation import (Segmenter, SegmenterOptions, UNet, label_lookup, make_model, make_spec,
                                                   predict_logits, progress_bar, save_segmenter, to_targets)


def make_train_step(model: UNet, tx: optax.GradientTransformation) -> Callable:
    """step(params, opt_state, lut, images, labels) -> (params, opt_state, metrics), jitted, state donated."""

    def loss_fn(params, images, targets):
        logits = predict_logits(model, params, images)
        valid = targets >= 0
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(targets, 0))
        n = jnp.maximum(valid.sum(), 1)
        acc = jnp.sum((jnp.argmax(logits, -1) == targets) & valid) / n
        return jnp.sum(jnp.where(valid, ce, 0.0)) / n, acc

    def step(params, opt_state, lut, images, labels):
        targets = to_targets(labels, lut)
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, images, targets)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, "pixel_acc": acc}

    return jax.jit(step, donate_argnums=(0, 1))


def make_optimizer(s: SegmenterOptions) -> optax.GradientTransformation:
    """Adam with cosine decay of the learning rate to 0 over the training steps."""
    return optax.adam(optax.cosine_decay_schedule(s.lr, max(int(s.steps), 1)))


def heldout_examples(config: ml_collections.ConfigDict, num: int) -> list[dict[str, np.ndarray]]:
    """Examples the segmenter never trains on: the evaluation split (unseen scenes for synthetic data)."""
    return inputs.load_examples(config, SegmenterOptions.from_config(config).heldout_split, num)


def batches_of(examples: Sequence[Mapping[str, np.ndarray]], batch_size: int,
               key: str = "image") -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """(images, labels) batches of transformed examples, as Segmenter.score takes them."""
    for batch in inputs.batches(examples, batch_size):
        yield batch[key], batch["label"]


def train_segmenter(config: ml_collections.ConfigDict, out_dir: str, *, progress: bool = True,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train on the real images of `config.data.phase`, score held-out real images, save to out_dir.

    Hyperparameters: config.eval.segmenter (features, levels, classes, steps, batch_size, lr, seed,
    num_examples); data and transforms: config.data, as in pix2pixHD training (random flips kept).
    Returns the saved spec, whose 'heldout' entry holds the real-image scores (the ceiling).
    """
    s = SegmenterOptions.from_config(config)
    transform = inputs.transform_config(config)
    source = inputs.make_source(config, s.phase, s.num_examples or s.synthetic_num, s.synthetic_seed)
    height, width = inputs.example_size(source, transform, skip_bad=s.skip_bad_examples)
    spec = make_spec(config, height, width)
    model, tx = make_model(spec), make_optimizer(s)
    size = 2 ** model.levels  # the network is fully convolutional: init at the smallest size it takes
    params = jax.jit(model.init)(jax.random.PRNGKey(s.seed), jnp.zeros((1, size, size, 3)))["params"]
    opt_state = jax.jit(tx.init)(params)
    lut = jnp.asarray(label_lookup(spec["model"]["classes"]))
    step_fn = make_train_step(model, tx)
    dataset = pipeline.build_dataset(source, batch_size=s.batch_size, transform=transform, seed=s.seed, shuffle=True,
                                     shard_index=0, shard_count=1, skip_bad_examples=s.skip_bad_examples,
                                     image_size=(height, width))
    data_iter = iter(dataset)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
    log(f"segmenter: U-Net features={s.features} levels={s.levels} ({n_params / 1e6:.2f}M params), "
        f"{len(spec['model']['classes'])} classes, {len(source)} {s.source} images {width}x{height}, "
        f"{s.steps} steps of batch {s.batch_size}")
    t0, metrics, history = time.time(), None, []
    bar = progress_bar(range(1, s.steps + 1), progress, "train segmenter", total=s.steps)
    for step in bar:
        batch = next(data_iter)
        params, opt_state, metrics = step_fn(params, opt_state, lut, batch["image"], batch["label"])
        if step % s.log_every == 0 or step == s.steps:
            m = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if not np.isfinite(m["loss"]):
                raise FloatingPointError(f"segmenter loss is {m['loss']} at step {step}; lower eval.segmenter.lr")
            history.append({"step": step, **m})
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{m['loss']:.3f}", acc=f"{m['pixel_acc']:.3f}")
    if hasattr(bar, "close"):
        bar.close()
    if hasattr(data_iter, "close"):
        data_iter.close()
    train_s = time.time() - t0
    segmenter = Segmenter(spec, params)
    heldout = heldout_examples(config, s.heldout_examples)
    scores = segmenter.score(batches_of(heldout, s.batch_size), progress=progress, desc="held-out real")
    majority = majority_baseline(heldout, spec["model"]["classes"])
    spec.update(train_seconds=round(train_s, 1), history=history[-20:],
                heldout={"split": s.heldout_split, "num_images": len(heldout), **scores,
                         "majority_class_pixel_acc": majority})
    save_segmenter(out_dir, spec, params)
    log(f"segmenter trained in {train_s:.0f}s; held-out real images ({len(heldout)}): pixel acc "
        f"{scores['pixel_acc']:.4f}, mean IoU {scores['mean_iou']:.4f} (majority class {majority:.4f}); "
        f"saved to {out_dir}")
    return spec


def majority_baseline(examples: Sequence[Mapping[str, np.ndarray]], classes: Sequence[int]) -> float:
    """Pixel accuracy of always predicting the most frequent scored class (the trivial baseline)."""
    lut = label_lookup(classes)
    labels = np.concatenate([e["label"].reshape(-1) for e in examples]).astype(np.int64)
    targets = np.where((labels >= 0) & (labels < len(lut)), lut[np.clip(labels, 0, len(lut) - 1)], -1)
    counts = np.bincount(targets[targets >= 0], minlength=len(classes))
    return float(counts.max() / max(counts.sum(), 1))
