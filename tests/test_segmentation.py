"""Segmentation score: confusion-matrix metrics, a segmenter that learns, save/restore, evaluate and the trainer hook."""
import json
import os
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pix2pixhd_jax.configs import tiny_test
from pix2pixhd_jax import inputs, train
from pix2pixhd_jax.cli import evaluate as evaluate_cli
from pix2pixhd_jax.evaluation import segmentation as seg, segmenter_training

SYNTHETIC_IDS = (7, 8, 11, 17, 19, 20, 21, 22, 23, 24, 26)


# ------------------------------------------------------------------------------------- metrics
def test_confusion_matrix_and_scores_on_hand_made_maps():
    targets = jnp.array([[0, 0, 1, 1], [2, 2, -1, 1]])  # -1: an ignored pixel
    preds = jnp.array([[0, 1, 1, 1], [2, 0, 2, 1]])
    conf = np.asarray(seg.confusion_matrix(targets, preds, 3))
    np.testing.assert_array_equal(conf, [[1, 1, 0], [0, 3, 0], [1, 0, 1]])  # rows: target, cols: prediction
    s = seg.scores_from_confusion(conf, ["a", "b", "c"])
    assert s["pixel_acc"] == pytest.approx(5 / 7)
    # IoU: a 1/(2+2-1), b 3/(3+4-3), c 1/(2+1-1)
    assert s["mean_iou"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert s["class_iou"] == {"a": round(1 / 3, 4), "b": 0.75, "c": 0.5}
    # A 4th class absent from targets and predictions does not enter the mean ...
    conf4 = np.asarray(seg.confusion_matrix(targets, preds, 4))
    assert seg.scores_from_confusion(conf4)["mean_iou"] == pytest.approx(s["mean_iou"])
    # ... but one that is only predicted counts with IoU 0.
    preds_extra = preds.at[0, 0].set(3)
    s_extra = seg.scores_from_confusion(np.asarray(seg.confusion_matrix(targets, preds_extra, 4)))
    assert s_extra["pixel_acc"] == pytest.approx(4 / 7)
    assert s_extra["mean_iou"] == pytest.approx((0 + 3 / 4 + 1 / 2 + 0) / 4)


def test_perfect_prediction_scores_one_and_accumulation_is_jit_and_batch_invariant():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 5, (3, 8, 16))
    perfect = seg.scores_from_confusion(np.asarray(seg.confusion_matrix(jnp.asarray(t), jnp.asarray(t), 5)))
    assert perfect["pixel_acc"] == 1.0 and perfect["mean_iou"] == 1.0
    p = rng.integers(0, 5, (3, 8, 16))
    jitted = jax.jit(seg.confusion_matrix, static_argnums=2)
    whole = np.asarray(jitted(jnp.asarray(t), jnp.asarray(p), 5))
    parts = sum(np.asarray(jitted(jnp.asarray(t[i:i + 1]), jnp.asarray(p[i:i + 1]), 5)) for i in range(3))
    np.testing.assert_array_equal(whole, parts)
    assert whole.sum() == t.size
    with pytest.raises(ValueError, match="empty"):
        seg.scores_from_confusion(np.zeros((3, 3)))


def test_label_ids_outside_the_class_set_are_ignored():
    lut = jnp.asarray(seg.label_lookup((7, 26)))
    labels = jnp.array([7, 26, 5, 40, 300, -1])
    np.testing.assert_array_equal(seg.to_targets(labels, lut), [0, 1, -1, -1, -1, -1])
    with pytest.raises(ValueError, match="label_nc=35"):
        seg.resolve_classes((7, 35), 35)
    assert seg.resolve_classes((), 4) == (0, 1, 2, 3)


# ------------------------------------------------------------------------------- a real segmenter
def _seg_config():
    config = tiny_test.get_config()
    s = config.eval.segmenter
    s.classes = SYNTHETIC_IDS
    s.features, s.levels = 8, 2
    s.steps, s.batch_size, s.lr, s.log_every = 40, 8, 3e-3, 10
    s.num_examples, s.heldout_examples = 64, 16
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("segmenter"))
    spec = segmenter_training.train_segmenter(_seg_config(), out, progress=False, log=lambda _: None)
    return out, spec


def test_segmenter_learns_beyond_the_majority_class(trained):
    _, spec = trained
    held = spec["heldout"]
    assert held["num_images"] == 16 and held["split"] == "test"  # unseen synthetic scenes
    assert held["pixel_acc"] > held["majority_class_pixel_acc"] + 0.15, held
    assert held["mean_iou"] > 0.2, held
    assert spec["history"][-1]["loss"] < spec["history"][0]["loss"]


def test_save_restore_round_trip_and_mismatch_refusal(trained, tmp_path):
    out, spec = trained
    loaded = seg.load_segmenter(out, expect=seg.data_identity(_seg_config(), 32, 64, SYNTHETIC_IDS))
    assert loaded.classes == SYNTHETIC_IDS
    examples = inputs.load_examples(_seg_config(), "test", 16)
    again = loaded.score(segmenter_training.batches_of(examples, 8))
    assert again["pixel_acc"] == pytest.approx(spec["heldout"]["pixel_acc"], abs=1e-7)
    assert again["mean_iou"] == pytest.approx(spec["heldout"]["mean_iou"], abs=1e-7)
    pred = loaded.predict(examples[0]["image"][None])
    assert pred.shape == (1, 32, 64) and set(np.unique(pred)) <= set(SYNTHETIC_IDS)

    # Other image size, label set or data: refused, naming the field and how to train a matching one.
    with pytest.raises(ValueError, match=r"height: segmenter 32 vs run 64.*cli.train_segmenter"):
        seg.load_segmenter(out, expect=seg.data_identity(_seg_config(), 64, 64, SYNTHETIC_IDS))
    other = _seg_config()
    other.data.source, other.data.dataroot = "folder", "/data/cityscapes"
    with pytest.raises(ValueError, match="source: segmenter 'synthetic' vs run 'folder'"):
        seg.load_segmenter(out, expect=seg.data_identity(other, 32, 64, SYNTHETIC_IDS))
    with pytest.raises(ValueError, match="classes"):
        seg.load_segmenter(out, expect=seg.data_identity(_seg_config(), 32, 64, (7, 26)))

    # Parameters that do not fit the saved network are refused with the offending names.
    bad = tmp_path / "bad"
    bad.mkdir()
    edited = dict(spec, model=dict(spec["model"], features=16))
    (bad / seg.SPEC_FILE).write_text(json.dumps(edited))
    (bad / seg.PARAMS_FILE).write_bytes(open(os.path.join(out, seg.PARAMS_FILE), "rb").read())
    with pytest.raises(ValueError, match=r"does not match the network.*shape"):
        seg.load_segmenter(str(bad))
    with pytest.raises(FileNotFoundError, match="--out="):
        seg.load_segmenter(str(tmp_path / "nothing"))


# --------------------------------------------------------------------- evaluate CLI and trainer hook
def test_trainer_hook_logs_eval_metrics_and_evaluate_reports_segmentation(trained, tmp_path):
    out, spec = trained
    config = tiny_test.get_config()
    e = config.eval
    e.every_steps, e.num_examples, e.batch_size, e.lpips, e.segmenter_dir = 1, 4, 2, False, out
    workdir = str(tmp_path / "run")
    train.run(config, workdir)
    lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    evals = {l["step"]: l for l in lines if "eval/segmentation/fake/mean_iou" in l}
    assert sorted(evals) == [1, 2]
    for line in evals.values():
        assert {"eval/l1", "eval/segmentation/fake/pixel_acc", "eval/segmentation/real/mean_iou"} <= set(line)
        assert 0.0 <= line["eval/segmentation/fake/pixel_acc"] <= 1.0
    # The real-image ceiling does not depend on the generator; the fakes of a 2-step G are worse.
    assert evals[1]["eval/segmentation/real/pixel_acc"] == evals[2]["eval/segmentation/real/pixel_acc"]
    assert evals[2]["eval/segmentation/fake/pixel_acc"] < evals[2]["eval/segmentation/real/pixel_acc"]

    assert evaluate_cli.main(["prog", "--workdir", workdir, "--num", "4", "--batch_size", "2", "--segmenter", out,
                              "--nolpips", "--out", str(tmp_path / "eval.json")]) == 0
    saved = report = json.load(open(tmp_path / "eval.json"))
    assert saved["segmentation"]["real"]["pixel_acc"] == pytest.approx(evals[2]["eval/segmentation/real/pixel_acc"])
    assert saved["segmentation"]["fake"]["mean_iou"] == pytest.approx(evals[2]["eval/segmentation/fake/mean_iou"],
                                                                     abs=1e-6)
    assert report["step"] == 2 and "lpips_to_real" not in report
