"""Synthetic street scenes: determinism, Cityscapes conventions, touching instances, appearance ground truth."""
import numpy as np
import pytest

from pix2pixhd_jax.data import cityscapes as cs
from pix2pixhd_jax.data import synthetic


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in ("label", "inst", "image"))


def test_same_seed_same_scene_and_different_seeds_differ():
    a, b = synthetic.generate_example(3, 7, 256, 128), synthetic.generate_example(3, 7, 256, 128)
    assert _same(a, b) and a["meta"] == b["meta"]
    assert not np.array_equal(a["label"], synthetic.generate_example(4, 7, 256, 128)["label"])
    assert not np.array_equal(a["label"], synthetic.generate_example(3, 8, 256, 128)["label"])


@pytest.mark.parametrize("size", [(512, 256), (100, 37)])
def test_shapes_dtypes_and_cityscapes_conventions(size):
    w, h = size
    ex = synthetic.generate_example(0, 1, w, h)
    assert ex["label"].shape == (h, w) and ex["label"].dtype == np.uint8
    assert ex["inst"].shape == (h, w) and ex["inst"].dtype == np.int32
    assert ex["image"].shape == (h, w, 3) and ex["image"].dtype == np.uint8
    assert ex["label"].max() < cs.NUM_LABEL_IDS
    # Instance ids are class*1000+k for things and the class id for stuff, so they imply the label.
    np.testing.assert_array_equal(cs.instance_class(ex["inst"]), ex["label"])
    things = ex["inst"] >= cs.INSTANCE_ID_OFFSET
    assert set(np.unique(ex["label"][things])) <= cs.THING_IDS
    assert not set(np.unique(ex["label"][~things])) & cs.THING_IDS


def test_scene_has_the_street_classes():
    seen = set()
    for i in range(4):
        seen |= set(np.unique(synthetic.generate_example(0, i, 256, 128)["label"]).tolist())
    names = {"sky", "building", "road", "sidewalk", "vegetation", "pole", "car", "person"}
    assert {cs.NAME_TO_ID[n] for n in names} <= seen


def test_touching_same_class_instances_exist():
    """Instance boundaries inside one class: the edge map carries what the label map cannot."""
    found = 0
    for i in range(4):
        ex = synthetic.generate_example(0, i, 256, 128)
        lab, inst = ex["label"].astype(np.int32), ex["inst"]
        for axis in (0, 1):
            dl, di = np.diff(lab, axis=axis) != 0, np.diff(inst, axis=axis) != 0
            found += int(np.sum(di & ~dl))
    assert found > 50


def test_appearance_metadata_matches_pixels():
    """Each visible car's recorded palette colour is the nearest palette colour to its median pixel."""
    names = list(synthetic.CAR_COLOURS)
    checked = matched = 0
    for i in range(5):
        ex = synthetic.generate_example(1, i, 256, 128)
        meta = ex["meta"]
        light = meta["light"] * np.asarray(meta["tint"])
        palette = np.array([synthetic.CAR_COLOURS[n] for n in names]) * light
        visible = {int(i) for i in np.unique(ex["inst"])}
        for inst in meta["instances"]:
            assert inst["id"] in visible and inst["pixels"] == int(np.sum(ex["inst"] == inst["id"]))
            if inst["class"] != "car" or inst["pixels"] < 150:
                continue
            median = np.median(ex["image"][ex["inst"] == inst["id"]].astype(np.float64), axis=0)
            checked += 1
            matched += names[int(np.argmin(((palette - median) ** 2).sum(1)))] == inst["color_name"]
    assert checked >= 8 and matched >= 0.8 * checked


def test_appearance_varies_for_a_fixed_label_map():
    a = synthetic.generate_example(0, 2, 256, 128, appearance_seed=10)
    b = synthetic.generate_example(0, 2, 256, 128, appearance_seed=11)
    np.testing.assert_array_equal(a["label"], b["label"])
    np.testing.assert_array_equal(a["inst"], b["inst"])
    assert np.abs(a["image"].astype(int) - b["image"].astype(int)).mean() > 5
    cars_a = [x["color_name"] for x in a["meta"]["instances"] if x["class"] == "car"]
    cars_b = [x["color_name"] for x in b["meta"]["instances"] if x["class"] == "car"]
    assert len(cars_a) == len(cars_b) > 0 and cars_a != cars_b
    assert len(synthetic.CAR_COLOURS) >= 8


def test_layout_is_resolution_independent():
    small = synthetic.generate_example(0, 4, 256, 128)["label"]
    big = synthetic.generate_example(0, 4, 512, 256)["label"]
    assert np.mean(big[1::2, 1::2] == small) > 0.95


def test_synthetic_source_random_access():
    src = synthetic.SyntheticSource(5, width=64, height=32, seed=2, with_meta=True)
    assert len(src) == 5
    ex = src[3]
    assert _same(ex, synthetic.generate_example(2, 3, 64, 32)) and isinstance(ex["meta"], str)
    with pytest.raises(IndexError):
        src[5]
