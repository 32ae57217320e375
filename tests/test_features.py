"""Feature banks: k-means finds planted clusters, the area threshold, storage with the checkpoint, the CLI."""
import os

import numpy as np
import pytest

import feature_helpers as fh
from pix2pixhd_jax import features


def test_kmeans_finds_planted_clusters_and_is_reproducible():
    rng = np.random.default_rng(0)
    truth = np.array([[-2.0, 0, 1], [2.0, 2, -1], [0.0, -2, 0], [1.5, -1.5, 2]])
    sizes = [30, 25, 10, 5]
    x = np.concatenate([c + 0.05 * rng.standard_normal((n, 3)) for c, n in zip(truth, sizes)])
    centers, assign = features.kmeans(x, 4, seed=3, iters=50, n_init=2)
    # Ordered by size, so the centres come back in the planted order.
    np.testing.assert_allclose(centers, truth, atol=0.05)
    np.testing.assert_array_equal(assign, np.repeat(np.arange(4), sizes))
    again = features.kmeans(x, 4, seed=3, iters=50, n_init=2)
    np.testing.assert_array_equal(again[0], centers)
    # Fewer points than clusters: one centre per point (official min(N, n_clusters)).
    few, _ = features.kmeans(x[:2], 10, seed=0, iters=10)
    assert few.shape == (2, 3)
    with pytest.raises(ValueError, match="non-empty"):
        features.kmeans(np.zeros((0, 3)), 2, seed=0, iters=5)


def test_bank_keeps_only_regions_above_the_area_threshold():
    # One 16x16 map: a big car (area 64/256 = 0.25), a small car (4/256), road elsewhere.
    label = np.full((16, 16), 7, np.int32)
    inst = np.full((16, 16), 7, np.int32)
    label[:8, :8], inst[:8, :8] = 26, 26000
    label[12:14, 12:14], inst[12:14, 12:14] = 26, 26001
    pooled = np.zeros((16, 16, 2), np.float32)
    pooled[inst == 26000], pooled[inst == 26001], pooled[inst == 7] = [1.0, 0.0], [-1.0, 5.0], [0.3, 0.3]
    regions = features.region_records(pooled, inst, label, example=0)
    assert sorted(regions.region_id.tolist()) == [7, 26000, 26001]
    area = dict(zip(regions.region_id.tolist(), regions.area.tolist()))
    assert area[26000] == pytest.approx(0.25) and area[26001] == pytest.approx(4 / 256)
    bank = features.build_bank(regions, n_clusters=10, min_area_fraction=1 / 64, seed=0, iters=10)
    # The small car (4/256 < 1/64) is not clustered but still counts towards the class mean.
    np.testing.assert_allclose(bank.centers[26], [[1.0, 0.0]])
    np.testing.assert_allclose(bank.means[26], [0.0, 2.5])
    assert bank.num_clusters(7) == 1 and bank.num_clusters(24) == 0
    np.testing.assert_allclose(bank.default(24), [0.0, 0.0])  # unseen class: defined zeros
    with pytest.raises(IndexError, match="cluster 3 of class 26 does not exist; the bank holds 1"):
        bank.center(26, 3)
    with pytest.raises(KeyError, match="no clusters for class 24"):
        bank.center(24, 0)


def test_bank_round_trips_without_pickles(tmp_path):
    rng = np.random.default_rng(1)
    regions = features.EncodedRegions(example=np.zeros(40, np.int64), region_id=np.arange(40),
                                      class_id=np.repeat([7, 26], 20), area=np.full(40, 0.1),
                                      features=rng.standard_normal((40, 3)).astype(np.float32))
    bank = features.build_bank(regions, n_clusters=4, min_area_fraction=0.01, seed=0, iters=20, meta={"step": 5})
    path = bank.save(str(tmp_path / "b.npz"))
    with np.load(path, allow_pickle=False) as data:  # would raise if anything needed pickle
        assert all(data[k].dtype != object for k in data.files)
    back = features.FeatureBank.load(path)
    assert back.meta["step"] == 5 and back.feat_num == 3
    for c in (7, 26):
        np.testing.assert_array_equal(back.centers[c], bank.centers[c])
        np.testing.assert_array_equal(back.sizes[c], bank.sizes[c])
    # Same regions and seed: an identical bank.
    again = features.build_bank(regions, n_clusters=4, min_area_fraction=0.01, seed=0, iters=20)
    np.testing.assert_array_equal(again.centers[26], bank.centers[26])


def test_encode_features_stores_the_bank_with_the_checkpoint(tmp_path):
    workdir = fh.make_workdir(str(tmp_path / "w"), step=3)
    bank, path = fh.encode_bank(workdir)
    assert path == os.path.join(workdir, "checkpoints", "3", features.BANK_FILENAME) and os.path.exists(path)
    assert bank.meta["num_examples"] == 4 and bank.meta["step"] == 3
    # Every encoded class has a mean; clustered classes have at most n_clusters=3 centres of feat_num=3.
    assert bank.centers and all(c.shape[1] == 3 and len(c) <= 3 for c in bank.centers.values())
    assert set(bank.centers) <= set(bank.means)
    # Reproducible: encoding again gives the same bank.
    bank2, _ = fh.encode_bank(workdir)
    for c in bank.centers:
        np.testing.assert_array_equal(bank2.centers[c], bank.centers[c])
    # The bank sits inside the step folder without disturbing Orbax restores.
    from pix2pixhd_jax.inference import Synthesizer
    synth = Synthesizer.from_workdir(workdir)
    assert synth.bank is not None and synth.step == 3
    with pytest.raises(KeyError, match="unknown features option"):
        fh.encode_bank(workdir, n_cluster=2)


def test_encode_features_cli(tmp_path, capsys):
    from pix2pixhd_jax.cli import encode_features

    workdir = fh.make_workdir(str(tmp_path / "w"))
    assert encode_features.main(["prog", f"--workdir={workdir}", "--num_examples=2", "--n_clusters=2"]) == 0
    out = capsys.readouterr().out
    assert "feature bank of step 1" in out and "class  26" in out
    bank = features.load_bank(workdir, 1)
    assert bank.meta["n_clusters"] == 2 and all(len(c) <= 2 for c in bank.centers.values())
