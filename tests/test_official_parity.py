"""Our networks, loaded from official state dicts, reproduce the official PyTorch outputs."""

import jax
import numpy as np
import pytest

from official_ref import official_networks, randomize_, state_dict_numpy, to_nchw, to_nhwc, torch
from pix2pixhd_jax.compat.official import build_from_torch

ATOL = 1e-4
# Our side runs jitted (jax.jit(module.apply)): op by op, every op of every shape compiles on its own.


def _norm_layer(norm):
    return official_networks().get_norm_layer(norm)


def _compare(ours, theirs, atol=ATOL):
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    scale = max(1.0, float(np.abs(theirs).max()))
    np.testing.assert_allclose(ours, theirs, atol=atol * scale, rtol=0)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_global_generator_matches_official(norm):
    net = official_networks().GlobalGenerator(6, 3, 8, 2, 2, _norm_layer(norm))
    randomize_(net, 0).eval()
    x = np.random.default_rng(0).normal(size=(2, 12, 20, 6)).astype(np.float32)
    module, variables = build_from_torch(state_dict_numpy(net), "global", input_nc=6, output_nc=3, ngf=8,
                                         n_downsample_global=2, n_blocks_global=2, norm=norm)
    with torch.no_grad():
        want = to_nhwc(net(to_nchw(x)))
    _compare(jax.jit(module.apply)(variables, x), want)


@pytest.mark.parametrize("n_local", [1, 2])
def test_local_enhancer_matches_official(n_local):
    net = official_networks().LocalEnhancer(5, 3, 4, 2, 1, n_local, 1, _norm_layer("instance"))
    randomize_(net, n_local).eval()
    side = 2 ** (2 + n_local)
    x = np.random.default_rng(1).normal(size=(1, 2 * side, 3 * side, 5)).astype(np.float32)
    module, variables = build_from_torch(state_dict_numpy(net), "local", input_nc=5, output_nc=3, ngf=4,
                                         n_downsample_global=2, n_blocks_global=1, n_local_enhancers=n_local,
                                         n_blocks_local=1, norm="instance")
    with torch.no_grad():
        want = to_nhwc(net(to_nchw(x)))
    _compare(jax.jit(module.apply)(variables, x), want)


@pytest.mark.parametrize("interm", [True, False])
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_multiscale_discriminator_matches_official(interm, norm):
    net = official_networks().MultiscaleDiscriminator(7, 8, 3, _norm_layer(norm), False, 3, interm)
    randomize_(net, 2).eval()
    # Odd sizes exercise the padding-2 arithmetic and the count_include_pad=False pooling edges.
    x = np.random.default_rng(2).normal(size=(2, 37, 45, 7)).astype(np.float32)
    module, variables = build_from_torch(state_dict_numpy(net), "D", input_nc=7, ndf=8, n_layers_D=3, num_D=3,
                                         getIntermFeat=interm, norm=norm)
    with torch.no_grad():
        want = net(to_nchw(x))
    ours = jax.jit(module.apply)(variables, x)
    assert len(ours) == len(want) == 3
    for ours_scale, want_scale in zip(ours, want):
        assert len(ours_scale) == len(want_scale) == (5 if interm else 1)
        for o, w in zip(ours_scale, want_scale):
            _compare(o, to_nhwc(w))


def test_encoder_matches_official_with_instance_pooling():
    net = official_networks().Encoder(3, 3, 4, 2, _norm_layer("instance"))
    randomize_(net, 3).eval()
    rng = np.random.default_rng(3)
    image = rng.uniform(-1, 1, size=(2, 16, 24, 3)).astype(np.float32)
    inst = np.zeros((2, 16, 24, 1), np.int32)
    inst[0, :, 10:] = 26001
    inst[0, 4:9, 2:7] = 26002
    inst[1, 8:, :] = 7
    inst[1, :3, :3] = 26001  # the same id in another sample is pooled separately
    module, variables = build_from_torch(state_dict_numpy(net), "E", output_nc=3, feat_num=3, nef=4,
                                         n_downsample_E=2, norm="instance")
    with torch.no_grad():
        want = to_nhwc(net(to_nchw(image), to_nchw(inst.astype(np.float32))))
    _compare(jax.jit(module.apply)(variables, image, inst), want)


def test_strict_loading_lists_missing_and_mismatched():
    net = official_networks().GlobalGenerator(6, 3, 8, 2, 1, _norm_layer("instance"))
    sd = state_dict_numpy(net)
    del sd["model.1.bias"]
    sd["model.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as err:
        build_from_torch(sd, "global", input_nc=7, output_nc=3, ngf=8, n_downsample_global=2, n_blocks_global=1)
    msg = str(err.value)
    assert "missing: model.1.bias" in msg
    assert "shape mismatch: model.1.weight" in msg
    assert "unexpected: model.extra.weight" in msg


def test_gan_loss_matches_official_lsgan():
    from pix2pixhd_jax.losses import gan_loss

    crit = official_networks().GANLoss(use_lsgan=True, tensor=torch.FloatTensor)
    rng = np.random.default_rng(4)
    preds = [[rng.normal(size=(1, 5, 6, 2)).astype(np.float32), rng.normal(size=(1, 5, 6, 1)).astype(np.float32)],
             [rng.normal(size=(1, 3, 4, 2)).astype(np.float32), rng.normal(size=(1, 3, 4, 1)).astype(np.float32)]]
    torch_preds = [[to_nchw(p) for p in scale] for scale in preds]
    for real in (True, False):
        want = float(crit(torch_preds, real))
        got = float(gan_loss(preds, target_is_real=real, loss_type="lsgan"))
        assert abs(got - want) < 1e-5


def test_convert_cli_roundtrips_a_pth_file(tmp_path):
    from pix2pixhd_jax.cli.convert import main
    from pix2pixhd_jax.compat.convert import load_converted

    net = official_networks().MultiscaleDiscriminator(7, 4, 2, _norm_layer("batch"), False, 2, True)
    randomize_(net, 5).eval()
    torch.save(net.state_dict(), tmp_path / "latest_net_D.pth")
    assert main(["prog", "--net", "D", "--pth", str(tmp_path / "latest_net_D.pth"), "--out", str(tmp_path / "D"),
          "--option", "input_nc=7", "--option", "ndf=4", "--option", "n_layers_D=2", "--option", "num_D=2",
          "--option", "norm=batch"]) == 0
    module, variables = load_converted(str(tmp_path / "D"))
    x = np.random.default_rng(6).normal(size=(1, 20, 20, 7)).astype(np.float32)
    with torch.no_grad():
        want = net(to_nchw(x))
    for o, w in zip(jax.jit(module.apply)(variables, x)[1], want[1]):
        _compare(o, to_nhwc(w))
