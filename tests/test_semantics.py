"""Label one-hot, instance edge map and instance-wise pooling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pix2pixhd_jax.semantics import (check_labels, encode_input, input_channels, instance_average_pool,
                                     instance_edges, one_hot_labels)


def _edges_by_definition(inst: np.ndarray) -> np.ndarray:
    """Loop form of the official rule: 1 iff the pixel differs from an existing 4-neighbour."""
    b, h, w = inst.shape
    out = np.zeros(inst.shape, np.float32)
    for n in range(b):
        for y in range(h):
            for x in range(w):
                for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and inst[n, yy, xx] != inst[n, y, x]:
                        out[n, y, x] = 1
    return out


def test_edges_match_definition_on_random_maps():
    rng = np.random.default_rng(0)
    inst = rng.integers(0, 3, size=(2, 7, 9)) * 1000 + 26000
    np.testing.assert_array_equal(np.asarray(instance_edges(jnp.asarray(inst))), _edges_by_definition(inst))


def test_edges_separate_touching_instances_of_one_class():
    inst = np.full((1, 4, 6), 26001)
    inst[0, :, 3:] = 26002  # two cars side by side: same label, different instances
    edges = np.asarray(instance_edges(jnp.asarray(inst)))[0]
    np.testing.assert_array_equal(edges[:, 2:4], 1)
    assert edges[:, :2].sum() == 0 and edges[:, 4:].sum() == 0


def test_one_hot_and_out_of_range_is_loud():
    label = jnp.asarray([[[0, 2], [1, 34]]])
    oh = np.asarray(one_hot_labels(label, 35))
    assert oh.shape == (1, 2, 2, 35)
    np.testing.assert_array_equal(oh.argmax(-1), np.asarray(label))
    np.testing.assert_array_equal(oh.sum(-1), 1)
    bad = np.asarray(jax.jit(lambda l: one_hot_labels(l, 35))(jnp.asarray([[[0, 40]]])))
    assert np.isnan(bad[0, 0, 1]).all() and not np.isnan(bad[0, 0, 0]).any()


def test_check_labels_names_the_value_and_source():
    with pytest.raises(ValueError, match=r"label 40 in train_label/x.png .*label_nc=35"):
        check_labels(np.array([[3, 40]]), 35, "train_label/x.png")
    check_labels(np.array([[0, 34]]), 35)


def test_encode_input_layout_and_errors():
    label = jnp.asarray(np.random.default_rng(1).integers(0, 5, (2, 8, 8)))
    inst = label * 1000
    feats = jnp.ones((2, 8, 8, 3))
    x = encode_input(label, inst, label_nc=5, use_instance=True, features=feats)
    assert x.shape == (2, 8, 8, 5 + 1 + 3) == (2, 8, 8, input_channels(label_nc=5, input_nc=3, use_instance=True, feat_num=3))
    np.testing.assert_array_equal(np.asarray(x[..., 5]), np.asarray(instance_edges(inst)))  # edge right after one-hot
    np.testing.assert_array_equal(np.asarray(x[..., 6:]), 1)
    assert encode_input(label, None, label_nc=5, use_instance=False).shape[-1] == 5
    rgb = jnp.zeros((2, 8, 8, 3))
    assert encode_input(rgb, inst, label_nc=0, use_instance=True).shape[-1] == 4
    with pytest.raises(ValueError, match="instance map"):
        encode_input(label, None, label_nc=5, use_instance=True)


def test_instance_pool_means_per_sample_and_gradients_flow():
    rng = np.random.default_rng(2)
    feat = jnp.asarray(rng.normal(size=(2, 5, 6, 3)).astype(np.float32))
    inst = rng.integers(0, 4, size=(2, 5, 6)) * 1000 + 33001  # large ids, same ids in both samples
    pooled = np.asarray(jax.jit(instance_average_pool)(feat, jnp.asarray(inst)))
    f = np.asarray(feat)
    for b in range(2):
        for i in np.unique(inst[b]):
            m = inst[b] == i
            np.testing.assert_allclose(pooled[b][m], np.broadcast_to(f[b][m].mean(0), pooled[b][m].shape), atol=1e-6)
    # d(sum of pooled * w)/d feat = per-instance mean of w: gradients reach every pixel.
    w = jnp.asarray(rng.normal(size=feat.shape).astype(np.float32))
    g = np.asarray(jax.grad(lambda x: jnp.sum(instance_average_pool(x, jnp.asarray(inst)) * w))(feat))
    wn = np.asarray(w)
    for b in range(2):
        for i in np.unique(inst[b]):
            m = inst[b] == i
            np.testing.assert_allclose(g[b][m], np.broadcast_to(wn[b][m].mean(0), g[b][m].shape), atol=1e-5)
