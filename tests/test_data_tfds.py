"""TFDS builders: ArrayRecord prepare without TensorFlow, random-access read back, exact ids."""
import os

import numpy as np
import pytest

from pix2pixhd_jax.data import folders, pipeline, synthetic
from pix2pixhd_jax.data import tfds_builders as tb
from pix2pixhd_jax.data.transforms import TransformConfig


def test_synthetic_builder_round_trip_and_pipeline(tmp_path):
    cfg = tb.SyntheticStreetsConfig(name="tiny", width=64, height=32, num_train=4, num_test=2, seed=7)
    tb.SyntheticStreets(config=cfg, data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    assert any(f.endswith(".array_record-00000-of-00001") or "array_record" in f
               for _, _, fs in os.walk(tmp_path) for f in fs)
    train = tb.TfdsSource("synthetic_streets/tiny", split="train", data_dir=str(tmp_path))
    test = tb.TfdsSource("synthetic_streets/tiny", split="test", data_dir=str(tmp_path))
    assert (len(train), len(test)) == (4, 2)
    for i in (0, 3):  # order kept: example i is scene (seed, i)
        ref = synthetic.generate_example(7, i, 64, 32)
        for k in ("label", "inst", "image"):
            np.testing.assert_array_equal(train[i][k], ref[k])
    np.testing.assert_array_equal(test[1]["label"], synthetic.generate_example(8, 1, 64, 32)["label"])
    ds = pipeline.build_dataset(train, batch_size=2, transform=TransformConfig(resize_or_crop="none", size_divisor=16),
                                num_epochs=1, shard_index=0, shard_count=1)
    batches = list(ds)
    assert len(batches) == 2 and batches[0]["inst"].max() >= 1000


def test_paired_folders_builder_from_manual_dir(tmp_path):
    manual = tmp_path / "manual"
    for phase, n in (("train", 3), ("test", 1)):
        for i in range(n):
            ex = synthetic.generate_example(1, i, 48, 32)
            folders.write_official_example(str(manual), phase, f"{i:03d}", ex)
    builder = tb.prepare("paired_folders/official", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    assert builder.info.splits["train"].num_examples == 3 and builder.info.splits["test"].num_examples == 1
    src = tb.TfdsSource("paired_folders/official", split="train", data_dir=str(tmp_path / "tfds"))
    ref = folders.OfficialFolderSource(str(manual), "train")[2]
    for k in ("label", "inst", "image"):
        np.testing.assert_array_equal(src[2][k], ref[k])


def test_paired_folders_bad_file_fails_at_prepare_time(tmp_path):
    manual = tmp_path / "manual"
    folders.write_official_example(str(manual), "train", "a", synthetic.generate_example(1, 0, 32, 16))
    folders.write_label(str(manual / "train_label" / "a.png"), np.full((16, 32), 50, np.uint8))
    with pytest.raises(folders.DataError, match=r"label 50 in .*train_label/a.png >= label_nc=35"):
        tb.prepare("paired_folders/official", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
