"""Folder datasets: official and Cityscapes layouts, 16-bit instance ids, the synthetic CLI, clear errors."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from pix2pixhd_jax.cli import make_synthetic as make_synthetic_cli
from pix2pixhd_jax.data import folders, synthetic
from pix2pixhd_jax.data.folders import CityscapesSource, DataError, OfficialFolderSource


def _triplet(h=16, w=24, seed=0):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 34, (h, w)).astype(np.uint8)
    inst = np.where(label >= 24, label.astype(np.int32) * 1000 + rng.integers(0, 3, (h, w)), label).astype(np.int32)
    image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    return {"label": label, "inst": inst, "image": image}


def _write_official(root, n=3, phase="train", sizes=None):
    exs = []
    for i in range(n):
        ex = _triplet(seed=i)
        folders.write_official_example(str(root), phase, f"{i:04d}", ex)
        exs.append(ex)
    return exs


def test_instance_png_round_trip_keeps_16_bit_ids(tmp_path):
    ids = np.array([[26003, 33001, 7], [65535, 24000, 0]], np.int32)
    path = str(tmp_path / "inst.png")
    folders.write_instance(path, ids)
    assert Image.open(path).mode == "I;16"
    np.testing.assert_array_equal(folders.read_instance(path), ids)


def test_synthetic_cli_writes_official_layout(tmp_path):
    out = tmp_path / "syn"
    make_synthetic_cli.main(["prog", "--out", str(out), "--num", "3", "--width", "64", "--height", "32", "--seed", "5"])
    for sub in ("train_label", "train_inst", "train_img", "train_meta"):
        assert sorted(os.listdir(out / sub))[:1] == ["000000" + (".json" if sub == "train_meta" else ".png")]
    assert Image.open(out / "train_label" / "000001.png").mode == "L"
    assert Image.open(out / "train_inst" / "000001.png").mode == "I;16"
    assert Image.open(out / "train_img" / "000001.png").mode == "RGB"
    src = OfficialFolderSource(str(out), "train")
    assert len(src) == 3
    for i in range(3):
        ref = synthetic.generate_example(5, i, 64, 32)
        ex = src[i]
        for k in ("label", "inst", "image"):
            np.testing.assert_array_equal(ex[k], ref[k])
        assert ex["inst"].max() >= 1000  # thing ids survived the PNG
        with open(out / "train_meta" / f"{i:06d}.json") as f:
            assert json.load(f) == json.loads(json.dumps(ref["meta"]))


def test_official_layout_recursive_sorted_and_filtered(tmp_path):
    exs = _write_official(tmp_path, 3)
    # A nested folder is found recursively; non-image files are ignored.
    for kind, key in (("label", "label"), ("inst", "inst"), ("img", "image")):
        os.makedirs(tmp_path / f"train_{kind}" / "zz")
        (tmp_path / f"train_{kind}" / "notes.txt").write_text("x")
    extra = _triplet(seed=9)
    folders.write_label(str(tmp_path / "train_label" / "zz" / "a.png"), extra["label"])
    folders.write_instance(str(tmp_path / "train_inst" / "zz" / "a.png"), extra["inst"])
    folders.write_rgb(str(tmp_path / "train_img" / "zz" / "a.png"), extra["image"])
    src = OfficialFolderSource(str(tmp_path), "train")
    assert len(src) == 4
    for i, ref in enumerate(exs + [extra]):
        for k in ref:
            np.testing.assert_array_equal(src[i][k], ref[k])
    no_inst = OfficialFolderSource(str(tmp_path), "train", use_instance=False, load_image=False)
    assert set(no_inst[0]) == {"label"}


def test_rgb_input_layout_label_nc_0(tmp_path):
    for sub in ("train_A", "train_B"):
        os.makedirs(tmp_path / sub)
    a = np.random.default_rng(0).integers(0, 256, (8, 12, 3)).astype(np.uint8)
    folders.write_rgb(str(tmp_path / "train_A" / "x.png"), a)
    folders.write_rgb(str(tmp_path / "train_B" / "x.png"), a[::-1])
    ex = OfficialFolderSource(str(tmp_path), "train", label_nc=0, use_instance=False)[0]
    np.testing.assert_array_equal(ex["label"], a)
    np.testing.assert_array_equal(ex["image"], a[::-1])


def _write_cityscapes(root, split="train", frames=(("aachen", 0), ("aachen", 1), ("bonn", 0))):
    refs = {}
    for city, k in frames:
        key = f"{city}_{k:06d}_000019"
        gt, left = root / "gtFine" / split / city, root / "leftImg8bit" / split / city
        gt.mkdir(parents=True, exist_ok=True)
        left.mkdir(parents=True, exist_ok=True)
        ex = _triplet(seed=k + len(city))
        folders.write_label(str(gt / f"{key}_gtFine_labelIds.png"), ex["label"])
        folders.write_instance(str(gt / f"{key}_gtFine_instanceIds.png"), ex["inst"])
        folders.write_rgb(str(gt / f"{key}_gtFine_color.png"), ex["image"])  # present in Cityscapes, ignored
        folders.write_rgb(str(left / f"{key}_leftImg8bit.png"), ex["image"])
        refs[key] = ex
    return refs


def test_cityscapes_layout_pairs_by_frame_key(tmp_path):
    refs = _write_cityscapes(tmp_path)
    src = CityscapesSource(str(tmp_path), "train")
    assert src.keys == sorted(refs)
    for i, key in enumerate(src.keys):
        for k in ("label", "inst", "image"):
            np.testing.assert_array_equal(src[i][k], refs[key][k])
    os.remove(tmp_path / "leftImg8bit" / "train" / "bonn" / "bonn_000000_000019_leftImg8bit.png")
    with pytest.raises(DataError, match="bonn_000000_000019_leftImg8bit.png"):
        CityscapesSource(str(tmp_path), "train")


def test_label_id_at_or_above_label_nc_names_the_file(tmp_path):
    _write_official(tmp_path, 2)
    bad = np.full((16, 24), 40, np.uint8)
    folders.write_label(str(tmp_path / "train_label" / "0001.png"), bad)
    src = OfficialFolderSource(str(tmp_path), "train")
    src[0]
    with pytest.raises(DataError, match=r"label 40 in .*train_label/0001.png >= label_nc=35"):
        src[1]


def test_missing_instance_folder(tmp_path):
    _write_official(tmp_path, 1)
    os.rename(tmp_path / "train_inst", tmp_path / "elsewhere")
    with pytest.raises(DataError, match="use_instance is on but .*train_inst is missing"):
        OfficialFolderSource(str(tmp_path), "train")
    assert len(OfficialFolderSource(str(tmp_path), "train", use_instance=False)) == 1


def test_corrupt_image_names_the_file(tmp_path):
    _write_official(tmp_path, 2)
    path = tmp_path / "train_img" / "0001.png"
    path.write_bytes(path.read_bytes()[:60])  # truncated PNG
    src = OfficialFolderSource(str(tmp_path), "train")
    with pytest.raises(DataError, match=r"cannot read image .*train_img/0001.png"):
        src[1]


def test_size_mismatch_names_both_files(tmp_path):
    _write_official(tmp_path, 1)
    folders.write_rgb(str(tmp_path / "train_img" / "0000.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(DataError, match=r"size mismatch: .*train_img/0000.png is 10x10 but .*train_label/0000.png is 24x16"):
        OfficialFolderSource(str(tmp_path), "train")[0]


def test_file_count_mismatch(tmp_path):
    _write_official(tmp_path, 3)
    os.remove(tmp_path / "train_img" / "0002.png")
    with pytest.raises(DataError, match=r"no image file in .*train_img for 1 label file\(s\): 0002.png"):
        OfficialFolderSource(str(tmp_path), "train")


def test_files_pair_by_name_and_unmatched_names_are_listed(tmp_path):
    """Equal counts with one missing and one extra file used to shift every later pair (issue 14, item 6)."""
    _write_official(tmp_path, 3)
    os.rename(tmp_path / "train_inst" / "0001.png", tmp_path / "train_inst" / "0009.png")
    with pytest.raises(DataError, match=r"(?s)no instance file in .*train_inst for 1 label file\(s\): 0001.png.*"
                                        r"no label file in .*train_label for 1 instance file\(s\): 0009.png"):
        OfficialFolderSource(str(tmp_path), "train")
    # The official repository's sample data: one frame, three kind suffixes; listed in another order.
    root = tmp_path / "official"
    for i, frame in enumerate(["aachen_000001_000019", "aachen_000000_000019"]):
        ex = _triplet(seed=i)
        for kind, suffix in (("label", "_gtFine_labelIds"), ("inst", "_gtFine_instanceIds"), ("img", "_leftImg8bit")):
            os.makedirs(root / f"train_{kind}", exist_ok=True)
        folders.write_label(str(root / "train_label" / f"{frame}_gtFine_labelIds.png"), ex["label"])
        folders.write_instance(str(root / "train_inst" / f"{frame}_gtFine_instanceIds.png"), ex["inst"])
        folders.write_rgb(str(root / "train_img" / f"{frame}_leftImg8bit.png"), ex["image"])
    src = OfficialFolderSource(str(root), "train")
    assert [os.path.basename(f).split("_gt")[0].split("_left")[0] for f in src.files(0).values()] == \
        ["aachen_000000_000019"] * 3


def test_rgb_label_with_label_nc_is_an_error(tmp_path):
    _write_official(tmp_path, 1)
    folders.write_rgb(str(tmp_path / "train_label" / "0000.png"), np.zeros((16, 24, 3), np.uint8))
    with pytest.raises(DataError, match="has mode RGB; expected single-channel ids"):
        OfficialFolderSource(str(tmp_path), "train")[0]


def test_empty_or_missing_folders(tmp_path):
    with pytest.raises(DataError, match="train_label does not exist"):
        OfficialFolderSource(str(tmp_path), "train")
    os.makedirs(tmp_path / "train_label")
    with pytest.raises(DataError, match="no images"):
        OfficialFolderSource(str(tmp_path), "train")
