"""Local edits, pure part: which pixels an edit changed, the feathered weights, the blend, the config keys."""
import ml_collections
import numpy as np
import pytest

from pix2pixhd_jax.configs import default
from pix2pixhd_jax import run_config
from pix2pixhd_jax.editing import compositing


def _images(h=40, w=60):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8), rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _distance_to(mask):
    ys, xs = np.nonzero(mask)
    yy, xx = np.mgrid[:mask.shape[0], :mask.shape[1]]
    return np.sqrt((yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2).min(-1)


@pytest.mark.parametrize("margin, feather", [(4, 4), (0, 3), (2, 0), (0, 0)])
def test_composite_keeps_far_pixels_and_takes_the_new_render_near_the_change(margin, feather):
    previous, new = _images()
    changed = np.zeros((40, 60), bool)
    changed[10:16, 20:27] = True
    changed[30, 50] = True
    out = compositing.composite(previous, new, changed, margin, feather)
    assert out.dtype == np.uint8 and out.shape == previous.shape
    distance = _distance_to(changed)
    far = distance > margin + feather
    np.testing.assert_array_equal(out[far], previous[far])  # byte-identical beyond margin + feather
    near = distance <= margin  # the changed mask and its Euclidean margin: the new render as is
    np.testing.assert_array_equal(out[near], new[near])
    between = ~far & ~near
    lo, hi = np.minimum(previous, new)[between], np.maximum(previous, new)[between]
    assert ((out[between] >= lo) & (out[between] <= hi)).all()  # a blend of the two
    # Euclidean, not square: the pixel diagonal to a lone change at distance margin*sqrt(2) is not fully new.
    w = compositing.blend_weights(changed, margin, feather)
    if margin:
        assert w[30 - margin, 50 - margin] < 1 and w[30 - margin, 50] == 1


def test_feather_weights_fall_monotonically_with_distance():
    changed = np.zeros((50, 80), bool)
    changed[20:25, 30:40] = True
    w = compositing.blend_weights(changed, 3, 5)
    assert w.dtype == np.float32 and w.max() == 1 and w.min() == 0
    distance = _distance_to(changed)
    order = np.argsort(distance, axis=None, kind="stable")
    d, weights = distance.reshape(-1)[order], w.reshape(-1)[order]
    assert (np.diff(weights) <= 1e-6).all()  # never rises away from the change
    np.testing.assert_allclose(weights, np.clip(1 - (d - 3) / 5, 0, 1), atol=1e-6)  # linear over the feather
    row = w[22, 39:51]  # from the last changed pixel rightwards: 1 up to 3 px away, then 0.8, 0.6, ..., 0
    np.testing.assert_allclose(row, [1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2, 0, 0, 0, 0], atol=1e-6)


def test_empty_mask_returns_the_previous_image():
    previous, new = _images()
    out = compositing.composite(previous, new, np.zeros((40, 60), bool), 4, 4)
    np.testing.assert_array_equal(out, previous)
    assert out is not previous
    assert not compositing.blend_weights(np.zeros((5, 5), bool), 4, 4).any()


def test_changed_region_covers_label_instance_edges_and_features():
    label = np.full((12, 16), 7, np.int32)
    inst = label.copy()
    label[2:6, 2:6], inst[2:6, 2:6] = 26, 26000
    feats = np.zeros((12, 16, 3), np.float32)
    same = compositing.changed_region(label, inst, label, inst, feats, feats.copy())
    assert same.dtype == bool and not same.any()
    # A new object: its pixels, plus the ring whose edge value changed though its id did not.
    new_label, new_inst = label.copy(), inst.copy()
    new_label[8:10, 10:13], new_inst[8:10, 10:13] = 26, 26001
    changed = compositing.changed_region(label, inst, new_label, new_inst)
    ring = np.zeros_like(changed)
    ring[7:11, 10:13] = ring[8:10, 9:14] = True
    np.testing.assert_array_equal(changed, ring)
    # Same class, new id (relabel between objects): instance change alone is enough.
    renumbered = inst.copy()
    renumbered[2:6, 2:6] = 26005
    np.testing.assert_array_equal(compositing.changed_region(label, inst, label, renumbered), inst == 26000)
    # A feature change touches exactly the pixels whose vector differs.
    new_feats = feats.copy()
    new_feats[inst == 26000, 1] = 0.5
    np.testing.assert_array_equal(compositing.changed_region(label, inst, label, inst, feats, new_feats),
                                  inst == 26000)
    with pytest.raises(ValueError, match="both scenes or of neither"):
        compositing.changed_region(label, inst, label, inst, feats, None)
    with pytest.raises(ValueError, match="one \\(H, W\\) shape"):
        compositing.changed_region(label, inst, label[:4], inst[:4])


def test_bad_widths_and_images_are_refused():
    previous, new = _images(8, 8)
    changed = np.ones((8, 8), bool)
    for bad in (-1, 2.5, True, "4"):
        with pytest.raises(ValueError, match="margin_px=.* must be an integer number of pixels >= 0"):
            compositing.composite(previous, new, changed, bad, 4)
    with pytest.raises(ValueError, match="uint8"):
        compositing.composite(previous.astype(np.float32), new, changed, 1, 1)
    with pytest.raises(ValueError, match="must share"):
        compositing.composite(previous, new, changed[:4], 1, 1)


@pytest.mark.parametrize("key, value", [("local_margin_px", -1), ("local_feather_px", 2.5),
                                        ("local_margin_px", True)])
def test_config_validation_names_the_editing_key(key, value):
    config = default.get_config()
    run_config.validate(config)  # the defaults pass
    assert (config.editing.local_margin_px, config.editing.local_feather_px) == (4, 4)
    plain = config.to_dict()
    plain["editing"][key] = value  # a JSON config of any type (ConfigDict would refuse a float in an int field)
    with pytest.raises(run_config.ConfigError, match=f"editing.{key}={value!r}: must be an integer >= 0"):
        run_config.validate(ml_collections.ConfigDict(plain))
