"""Transforms and the grain pipeline: sizes, identical geometry across maps, sharding, determinism, resume."""
import numpy as np
import pytest

from pix2pixhd_jax.configs import tiny_test
from pix2pixhd_jax import inputs
from pix2pixhd_jax.data import cityscapes as cs
from pix2pixhd_jax.data import folders, pipeline, synthetic, transforms
from pix2pixhd_jax.data.folders import DataError, OfficialFolderSource
from pix2pixhd_jax.data.transforms import TransformConfig


class _IndexSource:
    """Tiny in-memory source whose example i carries i in its instance map (to trace elements)."""

    def __init__(self, n, h=8, w=8):
        self.n, self.h, self.w = n, h, w

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"label": np.full((self.h, self.w), i % 35, np.uint8), "inst": np.full((self.h, self.w), i, np.int32),
                "image": np.full((self.h, self.w, 3), i % 256, np.uint8)}


def _coords_example(h, w):
    """An example whose maps encode their own pixel coordinates."""
    yy, xx = np.mgrid[:h, :w]
    return {"label": ((xx + 3 * yy) % 35).astype(np.uint8), "inst": (yy * 10000 + xx).astype(np.int32),
            "image": np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.zeros_like(xx)], -1).astype(np.uint8)}


@pytest.mark.parametrize("mode,size,expected", [
    ("scale_width", (2048, 1024), (1024, 512)),
    ("scale_width", (1024, 512), (1024, 512)),
    ("resize_and_crop", (2048, 1024), (512, 512)),
    ("crop", (2048, 1024), (512, 512)),
    ("scale_width_and_crop", (2048, 1024), (512, 512)),
    ("none", (1000, 500), (992, 512)),
    ("none", (2048, 1024), (2048, 1024)),
])
def test_resize_or_crop_output_sizes(mode, size, expected):
    cfg = TransformConfig(resize_or_crop=mode, load_size=1024, fine_size=512, size_divisor=32)
    assert transforms.output_size(*size, cfg) == expected
    ex = _coords_example(size[1] // 8, size[0] // 8)
    small = TransformConfig(resize_or_crop=mode, load_size=128, fine_size=64, size_divisor=4)
    out = transforms.transform_example(ex, small, np.random.default_rng(0))
    w, h = transforms.output_size(size[0] // 8, size[1] // 8, small)
    assert out["label"].shape == (h, w) and out["inst"].shape == (h, w) and out["image"].shape == (h, w, 3)
    assert out["image"].dtype == np.float32 and -1 <= out["image"].min() and out["image"].max() <= 1


def test_sizes_the_generator_cannot_take_are_errors():
    with pytest.raises(DataError, match="not a positive multiple of size_divisor=16"):
        transforms.output_size(1000, 500, TransformConfig(resize_or_crop="scale_width", load_size=1000, size_divisor=16))
    with pytest.raises(DataError, match="crop does not fit"):
        transforms.output_size(300, 200, TransformConfig(resize_or_crop="crop", fine_size=256))
    with pytest.raises(ValueError, match="resize_or_crop="):
        TransformConfig(resize_or_crop="scale")


def test_same_crop_and_flip_on_all_maps():
    ex = _coords_example(40, 60)
    cfg = TransformConfig(resize_or_crop="crop", fine_size=24)
    flips = set()
    for s in range(12):
        out = transforms.transform_example(ex, cfg, np.random.default_rng(s))
        yy, xx = out["inst"] // 10000, out["inst"] % 10000  # source coordinates of every output pixel
        np.testing.assert_array_equal(out["label"], (xx + 3 * yy) % 35)
        img = (out["image"] + 1) * 127.5
        np.testing.assert_allclose(img[..., 0], xx * 255 // 59, atol=1e-3)
        np.testing.assert_allclose(img[..., 1], yy * 255 // 39, atol=1e-3)
        flips.add(bool(xx[0, 0] > xx[0, 1]))
    assert flips == {True, False}
    no_flip = TransformConfig(resize_or_crop="crop", fine_size=24, no_flip=True)
    assert all((np.diff(transforms.transform_example(ex, no_flip, np.random.default_rng(s))["inst"] % 10000, axis=1) > 0).all()
               for s in range(6))


def test_resize_keeps_ids_exact_and_maps_aligned():
    ex = _coords_example(50, 70)
    cfg = TransformConfig(resize_or_crop="scale_width_and_crop", load_size=97, fine_size=40)
    out = transforms.transform_example(ex, cfg, np.random.default_rng(1))
    assert set(np.unique(out["inst"])) <= set(np.unique(ex["inst"]))  # NEAREST invents no id
    yy, xx = out["inst"] // 10000, out["inst"] % 10000
    np.testing.assert_array_equal(out["label"], (xx + 3 * yy) % 35)
    # The bicubic photo samples the same place: its ramps agree with the nearest coordinates.
    img = (out["image"] + 1) * 127.5
    assert np.abs(img[2:-2, 2:-2, 0] - xx[2:-2, 2:-2] * 255 / 69).max() < 6
    assert np.abs(img[2:-2, 2:-2, 1] - yy[2:-2, 2:-2] * 255 / 49).max() < 8


def test_synthetic_boundaries_stay_aligned_after_transforms():
    src = synthetic.SyntheticSource(4, width=256, height=128, seed=0)
    cfg = TransformConfig(resize_or_crop="scale_width_and_crop", load_size=200, fine_size=64, size_divisor=16)
    ds = pipeline.build_dataset(src, batch_size=2, transform=cfg, seed=0, num_epochs=1, shard_index=0, shard_count=1)
    for batch in ds:
        np.testing.assert_array_equal(cs.instance_class(batch["inst"]), batch["label"])


def _collect(ds, n=None):
    it = iter(ds)
    out = [b for _, b in zip(range(n), it)] if n else list(it)
    return [b["inst"][:, 0, 0].tolist() for b in out]


_CFG = TransformConfig(resize_or_crop="none", size_divisor=4)


def test_pipeline_batches_dtypes_and_epochs():
    ds = pipeline.build_dataset(_IndexSource(10), batch_size=3, transform=_CFG, seed=0, num_epochs=2,
                                shard_index=0, shard_count=1)
    batches = list(ds)
    assert len(batches) == 2 * pipeline.steps_per_epoch(10, batch_size=3) == 6
    b = batches[0]
    assert b["label"].dtype == np.int32 and b["label"].shape == (3, 8, 8)
    assert b["inst"].dtype == np.int32 and b["image"].dtype == np.float32 and b["image"].shape == (3, 8, 8, 3)
    ids = [i for b in batches for i in b["inst"][:, 0, 0].tolist()]
    e1, e2 = ids[:9], ids[9:]
    assert len(set(e1)) == 9 and len(set(e2)) == 9 and e1 != e2  # no repeats in an epoch; reshuffled


def test_same_seed_same_batches_different_seed_differs():
    src = synthetic.SyntheticSource(6, width=64, height=32, seed=0)
    cfg = TransformConfig(resize_or_crop="crop", fine_size=16, size_divisor=16)
    make = lambda seed: pipeline.build_dataset(src, batch_size=2, transform=cfg, seed=seed, num_epochs=1,
                                               shard_index=0, shard_count=1)
    a, b, c = list(make(0)), list(make(0)), list(make(1))
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    assert any(not np.array_equal(x["image"], y["image"]) for x, y in zip(a, c))


def test_shards_are_disjoint_equal_and_cover_the_split():
    shards = [sum(_collect(pipeline.build_dataset(_IndexSource(11), batch_size=1, transform=_CFG, seed=3,
                                                  num_epochs=1, shard_index=i, shard_count=3)), [])
              for i in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    flat = [i for s in shards for i in s]
    assert len(set(flat)) == 9 and set(flat) <= set(range(11))


def test_iterator_state_restore_resumes_exactly():
    ds = pipeline.build_dataset(_IndexSource(7), batch_size=2, transform=_CFG, seed=5, shard_index=0, shard_count=1)
    it = iter(ds)
    for _ in range(4):  # crosses an epoch boundary (3 batches per epoch)
        next(it)
    state = it.get_state()
    expected = [next(it)["inst"][:, 0, 0].tolist() for _ in range(4)]
    fresh = iter(pipeline.build_dataset(_IndexSource(7), batch_size=2, transform=_CFG, seed=5, shard_index=0,
                                        shard_count=1))
    fresh.set_state(state)
    assert [next(fresh)["inst"][:, 0, 0].tolist() for _ in range(4)] == expected


def test_iterator_checkpoints_through_orbax(tmp_path):
    grain = pytest.importorskip("grain")
    ocp = pytest.importorskip("orbax.checkpoint")
    make = lambda: iter(pipeline.build_dataset(_IndexSource(9), batch_size=2, transform=_CFG, seed=1,
                                               shard_index=0, shard_count=1))
    it = make()
    next(it), next(it)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(2, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
        expected = next(it)["inst"][:, 0, 0].tolist()
        restored = make()
        mngr.restore(2, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(restored)))
    assert next(restored)["inst"][:, 0, 0].tolist() == expected


def test_split_smaller_than_global_batch_is_an_error():
    with pytest.raises(DataError, match="5 examples, fewer than the global batch 6"):
        pipeline.build_dataset(_IndexSource(5), batch_size=3, transform=_CFG, shard_index=0, shard_count=2)


def test_bad_file_raises_or_is_skipped_when_asked(tmp_path):
    for i in range(4):
        ex = synthetic.generate_example(0, i, 32, 16)
        folders.write_official_example(str(tmp_path), "train", f"{i:02d}", ex)
    (tmp_path / "train_img" / "02.png").write_bytes(b"not a png")
    src = OfficialFolderSource(str(tmp_path), "train")
    cfg = TransformConfig(resize_or_crop="none", size_divisor=16)
    ds = pipeline.build_dataset(src, batch_size=1, transform=cfg, shuffle=False, num_epochs=1,
                                shard_index=0, shard_count=1)
    with pytest.raises(DataError, match=r"train_img/02.png"):
        list(ds)
    ds = pipeline.build_dataset(src, batch_size=1, transform=cfg, shuffle=False, num_epochs=1,
                                shard_index=0, shard_count=1, skip_bad_examples=True)
    assert len(list(ds)) == 3


def _write_folder(root, phase, sizes):
    for i, (w, h) in enumerate(sizes):
        folders.write_official_example(str(root), phase, f"{i:02d}", synthetic.generate_example(0, i, w, h))


def test_mixed_image_sizes_name_the_file_unless_the_mode_makes_them_one_size(tmp_path):
    """They used to fail inside grain's batching naming neither file nor size (issue 14, item 11)."""
    _write_folder(tmp_path, "train", [(32, 16), (32, 16), (32, 16), (48, 16)])
    src = OfficialFolderSource(str(tmp_path), "train")
    none = TransformConfig(resize_or_crop="none", size_divisor=16)
    common = dict(batch_size=2, shuffle=False, num_epochs=1, shard_index=0, shard_count=1)
    for size in ((16, 32), None):  # the run's size, or (tools) the first example's
        with pytest.raises(DataError, match=r"train_label/03.png .* is 48x16 \(width x height\), 48x16 after "
                                            r"resize_or_crop='none', but this split's examples are 32x16"):
            list(pipeline.build_dataset(src, transform=none, image_size=size, **common))
    with pytest.raises(DataError, match=r"train_label/03.png .* is 48x16"):  # the sample grid's examples
        inputs.examples_of(src, none, 0)
    skipped = pipeline.build_dataset(src, transform=none, image_size=(16, 32), skip_bad_examples=True, **common)
    assert len(list(skipped)) == 1
    crop = TransformConfig(resize_or_crop="resize_and_crop", load_size=32, fine_size=16, size_divisor=16)
    assert len(list(pipeline.build_dataset(src, transform=crop, image_size=(16, 16), **common))) == 2


def test_skip_bad_examples_covers_the_size_probe_and_the_sample_grid(tmp_path):
    """Example 0 is read by the size probe and the held-out batch outside the pipeline (issue 14, item 5)."""
    for phase in ("train", "test"):
        _write_folder(tmp_path, phase, [(32, 16)] * 3)
        (tmp_path / f"{phase}_label" / "00.png").write_bytes(b"not a png")
    config = tiny_test.get_config()
    d = config.data
    d.source, d.dataroot, d.skip_bad_examples = "folder", str(tmp_path), True
    source = inputs.train_source(config)
    assert inputs.example_size(source, inputs.transform_config(config), skip_bad=True) == (16, 32)
    assert inputs.holdout_batch(config, source)["label"].shape == (2, 16, 32)
    assert len(inputs.load_examples(config, "test", 0)) == 2
    d.skip_bad_examples = False
    with pytest.raises(DataError, match=r"test_label/00.png"):
        inputs.holdout_batch(config, source)
    with pytest.raises(DataError, match=r"train_label/00.png"):
        inputs.example_size(source, inputs.transform_config(config))


def test_every_example_unreadable_names_the_first_file_and_why(tmp_path):
    """skip_bad_examples with nothing readable used to name neither a file nor a reason."""
    _write_folder(tmp_path, "train", [(32, 16)] * 2)
    for i in range(2):
        (tmp_path / "train_label" / f"{i:02d}.png").write_bytes(b"not a png")
    config = tiny_test.get_config()
    config.data.source, config.data.dataroot, config.data.skip_bad_examples = "folder", str(tmp_path), True
    with pytest.raises(DataError, match=r"2 examples, all skipped as unreadable.*the first: .*train_label/00.png"):
        inputs.example_size(inputs.train_source(config), inputs.transform_config(config), skip_bad=True)


def test_rgb_input_label_nc_0_is_normalised():
    src = [{"label": np.full((8, 8, 3), 255, np.uint8), "image": np.zeros((8, 8, 3), np.uint8)}] * 2
    cfg = TransformConfig(resize_or_crop="none", size_divisor=4, label_nc=0)
    b = next(iter(pipeline.build_dataset(src, batch_size=2, transform=cfg, shard_index=0, shard_count=1)))
    assert b["label"].dtype == np.float32 and b["label"].shape == (2, 8, 8, 3) and b["label"].min() == 1.0
    assert set(b) == {"label", "image"}


def test_worker_processes_give_the_same_batches():
    src = synthetic.SyntheticSource(8, width=64, height=32, seed=0)
    cfg = TransformConfig(resize_or_crop="crop", fine_size=16, size_divisor=16)
    make = lambda w: pipeline.build_dataset(src, batch_size=2, transform=cfg, seed=0, num_epochs=1,
                                            shard_index=0, shard_count=1, worker_count=w)
    it = iter(make(2))
    with_workers = [np.array(b["image"]) for b in it]
    it.close()
    assert len(with_workers) == 4
    assert all(np.array_equal(a["image"], b) for a, b in zip(make(0), with_workers))


def test_default_shard_uses_jax_process():
    ds = pipeline.build_dataset(_IndexSource(4), batch_size=2, transform=_CFG, num_epochs=1)
    assert len(list(ds)) == 2


def test_make_source_kinds_and_size_divisor(tmp_path):
    from pix2pixhd_jax.data.sources import make_source

    src = make_source("synthetic", num_examples=3, width=64, height=32, use_instance=False)
    assert len(src) == 3 and set(src[0]) == {"label", "image"}
    folders.write_official_example(str(tmp_path), "test", "a", synthetic.generate_example(0, 0, 32, 16))
    assert len(make_source("folder", dataroot=str(tmp_path), split="test")) == 1
    with pytest.raises(ValueError, match="unknown data source kind"):
        make_source("imagenet")
    assert transforms.size_divisor("global", 4, 1) == 16 and transforms.size_divisor("local", 4, 1) == 32


def test_recolouring_moves_chosen_objects_to_a_random_mean_colour_and_nothing_else():
    rng = np.random.default_rng(0)
    image = rng.uniform(-0.3, 0.3, (16, 16, 3)).astype(np.float32)
    inst = np.zeros((16, 16), np.int32)
    inst[2:8, 2:8], inst[9:14, 9:14], inst[0, :] = 26001, 24001, 7  # a car, a person, road
    example = {"label": inst // 1000 * (inst >= 1000) + 7 * (inst < 1000), "inst": inst,
               "image": ((image + 1) * 127.5).round().astype(np.uint8)}
    cfg = TransformConfig(resize_or_crop="none", no_flip=True, recolour_p=1.0, recolour_classes=(26,))
    plain = transforms.transform_example(example, TransformConfig(resize_or_crop="none", no_flip=True), rng)
    means = set()
    for seed in range(4):
        out = transforms.transform_example(example, cfg, np.random.default_rng(seed))
        car = inst == 26001
        np.testing.assert_array_equal(out["image"][~car], plain["image"][~car])  # the person and the road kept
        before, after = plain["image"][car], out["image"][car]
        for c in range(3):  # shading kept: each channel's deviations from its mean scaled by one factor in (0, 1]
            scale = np.ptp(after[:, c]) / np.ptp(before[:, c])
            assert 0 < scale <= 1 + 1e-5
            np.testing.assert_allclose(after[:, c] - after[:, c].mean(), scale * (before[:, c] - before[:, c].mean()),
                                       atol=1e-5)
        means.add(tuple(after.mean(axis=0).round(2)))
    assert len(means) == 4  # each draw a new colour
    held_out = transforms.transform_example(example, cfg, None, train=False)  # evaluation: never recoloured
    np.testing.assert_array_equal(held_out["image"], plain["image"])
    with pytest.raises(ValueError, match="recolour_p=1.5 is a probability"):
        TransformConfig(recolour_p=1.5)


class _Draws:
    """An rng whose every object is recoloured to one fixed colour."""

    def __init__(self, colour):
        self.colour = np.asarray(colour, np.float32)

    def random(self):
        return 0.0

    def uniform(self, low, high, size):
        return self.colour


@pytest.mark.parametrize("colour", [(1.0, -0.75, -0.75), (-1.0, 0.57, -0.53), (0.2, 0.99, -0.999)])
def test_a_recoloured_object_takes_the_drawn_mean_exactly_even_at_a_face_of_the_cube(colour):
    # A photo's car with strong shading (dark windows, bright highlights): a shift + clip would pull
    # the mean of a saturated colour back inside (pure red's R mean 0.74 here, i.e. 222 of 255).
    rng = np.random.default_rng(1)
    image = rng.uniform(-0.9, 0.9, (12, 12, 3)).astype(np.float32)
    inst = np.zeros((12, 12), np.int32)
    inst[2:10, 1:11] = 26003
    out = transforms.recolour_instances(image, inst, (26,), 1.0, _Draws(colour))
    car = inst == 26003
    np.testing.assert_allclose(out[car].mean(axis=0), colour, atol=1e-5)
    assert out.min() >= -1 and out.max() <= 1
    np.testing.assert_array_equal(out[~car], image[~car])
    for c in range(3):  # a channel at a face is flat; one inside keeps shading
        assert (np.ptp(out[car][:, c]) < 1e-5) == (abs(colour[c]) == 1.0)
