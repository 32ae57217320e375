"""Geometric edits on hand-made maps: move, delete, resize, flip; the hole-filling rule; object ids; masks."""
import numpy as np
import pytest

from pix2pixhd_jax import editing
from pix2pixhd_jax.editing import ops
from pix2pixhd_jax.semantics import instance_edges

ROAD, SIDEWALK, PERSON, CAR = 7, 8, 24, 26


def _street():
    """32x64: sidewalk rows 0..8, road below; a car (26000) at rows 12..18, cols 10..20; a person (24000) right of it."""
    label = np.full((32, 64), ROAD, np.int32)
    label[:8] = SIDEWALK
    inst = label.copy()
    label[12:18, 10:20], inst[12:18, 10:20] = CAR, 26000
    label[10:20, 30:34], inst[10:20, 30:34] = PERSON, 24000
    return label, inst


def test_move_keeps_the_feature_and_fills_the_hole_with_the_surrounding_stuff():
    label, inst = _street()
    scene = editing.Scene(label, inst, {26000: np.ones(3, np.float32), 7: np.zeros(3, np.float32)})
    moved = editing.move_instance(scene, 26000, 0, 15)  # lands on the person's left columns
    car = np.zeros_like(inst, bool)
    car[12:18, 25:35] = True
    np.testing.assert_array_equal(moved.inst == 26000, car)  # the whole object, in front of the person
    assert (moved.label[car] == CAR).all() and (moved.inst[12:18, 10:25] == ROAD).all()
    assert (moved.label[12:18, 10:25] == ROAD).all()
    assert (moved.inst[10:20, 35:] != 24000).all() and (moved.inst[10:12, 30:34] == 24000).all()
    np.testing.assert_array_equal(moved.features[26000], np.ones(3))  # same id, same look
    np.testing.assert_array_equal(moved.edges(), np.asarray(instance_edges(moved.inst[None]))[0])
    # The inputs are untouched (scenes are values).
    np.testing.assert_array_equal(scene.inst, _street()[1])


def test_each_hole_pixel_takes_the_nearest_stuff_never_another_object():
    label, inst = _street()
    # A person one pixel thick around the car's sides and bottom, a sidewalk lip right above it.
    label[11:19, 9:21], inst[11:19, 9:21] = PERSON, 24001
    label[11, 9:21], inst[11, 9:21] = SIDEWALK, SIDEWALK
    label[12:18, 10:20], inst[12:18, 10:20] = CAR, 26000
    classes, ids = ops.fill_values(label, inst, inst == 26000)
    assert set(ids.tolist()) <= {ROAD, SIDEWALK} and np.array_equal(classes, ids)  # stuff: id == class
    filled, filled_inst = ops.delete_region(label, inst, 26000)
    hole = filled[12:18, 10:20]
    assert (hole[0] == SIDEWALK).all()  # row 12: the lip is 1 step away
    assert (hole[-1] == ROAD).all()  # row 17: the road past the person is 2 steps away, the lip 6
    assert 24001 not in filled_inst[12:18, 10:20]
    # Straddling two regions: each half takes its own side (ties go to the pixel above).
    label, inst = np.full((16, 16), ROAD, np.int32), np.full((16, 16), ROAD, np.int32)
    label[:8], inst[:8] = SIDEWALK, SIDEWALK
    label[6:10, 6:10], inst[6:10, 6:10] = CAR, 26000
    out, _ = ops.delete_region(label, inst, 26000)
    np.testing.assert_array_equal(out[6:10, 6:10], np.repeat([[SIDEWALK], [SIDEWALK], [ROAD], [ROAD]], 4, 1))
    # No stuff near the object: the search grows until it finds some.
    label[2:14, 2:14], inst[2:14, 2:14] = PERSON, 24000
    label[6:10, 6:10], inst[6:10, 6:10] = CAR, 26000
    assert set(ops.fill_values(label, inst, inst == 26000)[1].tolist()) <= {ROAD, SIDEWALK}
    # Only objects left: the nearest other region.
    objects = np.r_[[[26000] * 4] * 2, [[26001] * 4] * 2].astype(np.int32)
    assert set(ops.fill_values(np.full((4, 4), CAR), objects, objects == 26000)[1].tolist()) == {26001}
    with pytest.raises(ValueError, match="covers the whole map"):
        ops.fill_values(label, inst, np.ones_like(inst, bool))


def test_move_drops_pixels_past_the_border_but_never_the_whole_object():
    label, inst = _street()
    out_label, out_inst = ops.move_region(label, inst, 26000, -14, 50)  # up and right, half off the map
    np.testing.assert_array_equal(np.argwhere(out_inst == 26000), np.argwhere(np.pad(np.ones((4, 4)), 0) > 0) + [0, 60])
    with pytest.raises(ValueError, match="leaves no pixel of instance 26000 on the 32x64 map"):
        ops.move_region(label, inst, 26000, 0, 64)
    with pytest.raises(KeyError, match="instance 26005 is not in the map"):
        ops.move_region(label, inst, 26005, 1, 1)


def test_delete_resize_and_flip():
    label, inst = _street()
    scene = editing.Scene(label, inst, {26000: np.ones(3, np.float32)})
    gone = editing.delete_instance(scene, 26000)
    assert 26000 not in gone.instances() and 26000 not in gone.features
    assert (gone.label[12:18, 10:20] == ROAD).all()

    same = editing.resize_instance(scene, 26000, 1.0)
    np.testing.assert_array_equal(same.inst, inst)
    big = editing.resize_instance(scene, 26000, 2.0)
    ys, xs = np.nonzero(big.inst == 26000)
    assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == (9, 21, 5, 25)  # 6x10 -> 12x20 about (14.5, 14.5)
    assert (big.label[big.inst == 26000] == CAR).all() and big.features[26000].tolist() == [1, 1, 1]
    small = editing.resize_instance(scene, 26000, 0.5)
    ys, xs = np.nonzero(small.inst == 26000)
    assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (3, 5)
    assert (small.inst[12:18, 10:20][small.inst[12:18, 10:20] != 26000] == ROAD).all()
    for bad in (0.0, -1.0, float("nan"), 100.0, "2"):
        with pytest.raises(ValueError, match="scale"):
            editing.resize_instance(scene, 26000, bad)

    # An L-shaped object mirrors inside its own box; twice is the identity on a plain background.
    label[12:14, 20:24], inst[12:14, 20:24] = CAR, 26000
    scene = editing.Scene(label, inst)
    flipped = editing.flip_instance(scene, 26000)
    np.testing.assert_array_equal(flipped.inst[12:18, 10:24] == 26000, (inst[12:18, 10:24] == 26000)[:, ::-1])
    np.testing.assert_array_equal(editing.flip_instance(flipped, 26000).inst, inst)


def test_object_ids_stay_inside_their_class_range():
    inst = np.full((4, 4), ROAD, np.int32)
    assert ops.next_object_id(inst, CAR) == 26000
    inst[0, 0], inst[0, 1] = 26998, 26999
    assert ops.next_object_id(inst, CAR) == 26000  # max k + 1 would be 27000 (a truck id)
    full = np.arange(26000, 27000, dtype=np.int32).reshape(25, 40)
    with pytest.raises(ValueError, match="class 26 already has 1000 objects"):
        ops.next_object_id(full, CAR)
    with_person = np.r_[np.arange(26000, 27000), np.full(25, 24000)].astype(np.int32).reshape(25, 41)
    scene = editing.Scene(np.where(with_person == 24000, PERSON, CAR).astype(np.int32), with_person)
    with pytest.raises(ValueError, match="already has 1000 objects"):
        editing.relabel_instance(scene, 24000, CAR, thing_classes=(CAR,))
    with pytest.raises(ValueError, match="class 0 cannot hold objects"):
        ops.next_object_id(inst, 0)


def test_region_masks_are_validated():
    shape = (32, 64)
    assert ops.rect_mask(shape, [0, 0, 32, 64]).all()
    for bad in ([0, 0, -1, -1], [-2, 0, 4, 4], [0, 0, 33, 4], [4, 4, 4, 8], [0, 0, 1], [0, 0, 1.5, 2], "0,0,1,1"):
        with pytest.raises(ValueError, match="rect"):
            ops.rect_mask(shape, bad)
    assert ops.disc_mask(shape, [10, 10, 2]).sum() == 13
    with pytest.raises(ValueError, match="outside the 32x64 map"):
        ops.disc_mask(shape, [40, 10, 2])
    stroke = ops.brush_mask(shape, {"radius": 1, "points": [[5, 0], [5, 30]]})
    assert stroke[5, :31].all() and not stroke[5, 32:].any()  # no gaps between far-apart points
    with pytest.raises(ValueError, match="brush point"):
        ops.brush_mask(shape, {"radius": 1, "points": [[5, float("inf")]]})
    with pytest.raises(ValueError, match="radius"):
        ops.brush_mask(shape, {"radius": 0, "points": [[5, 5]]})
    assert ops.as_int(7.0, "class") == 7
    for bad in (7.9, "7", True, None, float("nan")):
        with pytest.raises(ValueError):
            ops.as_int(bad, "class")
