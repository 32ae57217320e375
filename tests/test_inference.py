"""Synthesizer: loading with a strict config check, feature sampling/choice/encoding, shapes, errors, export."""
import numpy as np
import pytest

import feature_helpers as fh
from pix2pixhd_jax.cli import synthesize as synthesize_cli
from pix2pixhd_jax.export import ExportedGenerator
from pix2pixhd_jax.inference import Synthesizer


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    workdir = fh.make_workdir(str(tmp_path_factory.mktemp("inference") / "w"))
    fh.encode_bank(workdir)
    return Synthesizer.from_workdir(workdir)


def _largest_car(inst):
    ids, counts = np.unique(inst[inst >= 26000], return_counts=True)
    return int(ids[np.argmax(counts)])


def test_sampling_is_seeded_and_compiled_once_per_shape(synth):
    label, inst, _ = fh.scene(0)
    a = np.asarray(synth.synthesize(label, inst, seed=1))
    b = np.asarray(synth.synthesize(label, inst, seed=1))
    assert a.dtype == np.uint8 and a.shape == (32, 64, 3)
    np.testing.assert_array_equal(a, b)
    draws = [synth.region_features(label, inst, seed=s) for s in range(6)]
    assert any(d1[i][0] != d2[i][0] for d1, d2 in zip(draws, draws[1:]) for i in d1 if d1[i][0] is not None)
    # Batched, host or device input, same shape: still one compiled generator.
    batch = np.asarray(synth.synthesize(np.stack([label, label]), np.stack([inst, inst]), seed=1))
    np.testing.assert_array_equal(batch[0], a)
    n = synth.compiled_shapes()
    import jax.numpy as jnp
    synth.synthesize(jnp.asarray(label), jnp.asarray(inst), seed=2)
    assert synth.compiled_shapes() == n
    f = np.asarray(synth.synthesize(label, inst, seed=1, output="float"))
    assert f.dtype == np.float32 and -1 <= f.min() and f.max() <= 1
    np.testing.assert_array_equal(np.clip(np.round((f + 1) * 127.5), 0, 255).astype(np.uint8), a)


def test_chosen_feature_changes_mostly_that_instance(synth):
    # An untrained net's instance norm spreads any change over the image, so the margin here is
    # modest; benchmarks/feature_control.py measures locality on a trained model.
    label, inst, _ = fh.scene(3)
    car = _largest_car(inst)
    inside = inst == car
    lo = np.asarray(synth.synthesize(label, inst, {car: [-1.0, -1.0, -1.0]}, output="float"))
    hi = np.asarray(synth.synthesize(label, inst, {car: [1.0, 1.0, 1.0]}, output="float"))
    change = np.abs(hi - lo).mean(-1)
    assert change[inside].mean() > 2.5 * change[~inside].mean() > 0
    # A cluster index selects that centre of the car class.
    k = synth.bank.num_clusters(26)
    vec = synth.region_features(label, inst, {car: k - 1})[car]
    assert vec[0] == k - 1
    np.testing.assert_array_equal(vec[1], synth.bank.center(26, k - 1))


def test_encode_uses_the_real_photo(synth):
    label, inst, image = fh.scene(1)
    enc = np.asarray(synth.synthesize(label, inst, "encode", image=image))
    pooled = np.asarray(synth.encode(image[None], inst[None]))
    np.testing.assert_array_equal(enc, np.asarray(synth.synthesize(label[None], inst[None], pooled))[0])
    other = np.asarray(synth.synthesize(label, inst, "encode", image=-image))
    assert np.abs(enc.astype(int) - other).mean() > 0


def test_clear_errors_and_padding(synth, tmp_path):
    label, inst, _ = fh.scene(0)
    bad = label.copy()
    bad[0, 0] = 40
    with pytest.raises(ValueError, match=r"label 40 .* label_nc=35"):
        synth.synthesize(bad, inst)
    with pytest.raises(ValueError, match=r"size 30x64 .* multiples of 4 .* pad=True"):
        synth.synthesize(label[:30], inst[:30])
    padded = np.asarray(synth.synthesize(label[:30, :62], inst[:30, :62], pad=True))
    assert padded.shape == (30, 62, 3)
    # A colour-coded label image is refused, not rendered as a batch of H maps of W x 3 pixels (issue 26).
    colours = np.stack([label, label, label], axis=-1).astype(np.uint8)
    with pytest.raises(ValueError, match=r"shape \(32, 64, 3\), a colour image: label maps are class ids"):
        synth.synthesize(colours, inst, pad=True)
    with pytest.raises(KeyError, match=r"region id\(s\) \[99999\] not in the map"):
        synth.synthesize(label, inst, {99999: 0})
    car = _largest_car(inst)
    with pytest.raises(IndexError, match="cluster 50 of class 26 does not exist"):
        synth.synthesize(label, inst, {car: 50})
    with pytest.raises(ValueError, match="feat_num=3"):
        synth.synthesize(label, inst, {car: [1.0, 2.0]})
    with pytest.raises(ValueError, match="pass image="):
        synth.synthesize(label, inst, "encode")
    with pytest.raises(ValueError, match="pass inst"):
        synth.synthesize(label)
    with pytest.raises(ValueError, match="does not match the label shape"):
        synth.synthesize(label, inst[:, :32])
    no_bank = Synthesizer(synth.config, synth.g_params, synth.g_collections)
    with pytest.raises(ValueError, match="no feature bank.*encode_features"):
        no_bank.synthesize(label, inst)
    # Strict config check: a model key that differs from the saved config is named.
    other = fh.feature_config()
    other.model.ngf = 8
    with pytest.raises(ValueError, match=r"model.ngf: checkpoint 4 vs given 8"):
        Synthesizer.from_workdir(synth.workdir, config=other)
    assert Synthesizer.from_workdir(synth.workdir, config=fh.feature_config()).step == synth.step
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        Synthesizer.from_workdir(str(tmp_path))


def test_export_round_trip_gives_identical_outputs(synth, tmp_path):
    label, inst, _ = fh.scene(0)
    l2, i2, _ = fh.scene(2)
    labels, insts = np.stack([label, l2]), np.stack([inst, i2])
    feats = np.stack([synth.feature_map(l, i, synth.region_features(l, i, seed=4)) for l, i in zip(labels, insts)])
    path = synth.export(str(tmp_path / "export"), height=32, width=64)
    served = ExportedGenerator(path)
    want = np.asarray(synth.synthesize(labels, insts, feats))
    np.testing.assert_array_equal(np.asarray(served(labels, insts, feats)), want)
    # Symbolic batch: one artifact serves any batch size.
    np.testing.assert_array_equal(np.asarray(served(labels[:1], insts[:1], feats[:1])), want[:1])
    with pytest.raises(ValueError, match="pass feats"):
        served(labels, insts)
    # Damaged artifacts are refused naming the file, not with an AttributeError.
    (tmp_path / "export" / "params.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=r"cannot read .*export/params.npz as an .npz of arrays"):
        ExportedGenerator(path)
    np.savez(tmp_path / "export" / "params.npz", *[np.asarray(p) for p in served.params])
    (tmp_path / "export" / "signature.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"export/signature.json is not an export signature"):
        ExportedGenerator(path)
    (tmp_path / "export" / "generator.jaxexport").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"cannot read .*export/generator.jaxexport as a jax.export artifact"):
        ExportedGenerator(path)


def test_non_finite_features_and_bad_photos_are_refused_naming_the_region(synth):
    """One NaN/inf vector used to blank the whole image silently (issue 14, item 7)."""
    label, inst, image = fh.scene(3)
    car = _largest_car(inst)
    for vec in ([np.nan, 0.0, 0.0], [0.0, np.inf, 0.0]):
        with pytest.raises(ValueError, match=rf"region id\(s\) \[{car}\] holds NaN or inf"):
            synth.synthesize(label, inst, {car: vec})
    feats = synth.feature_map(label, inst, synth.region_features(label, inst, seed=0))
    feats[inst == car] = np.inf
    with pytest.raises(ValueError, match=rf"the feature map given: .* in region id\(s\) \[{car}\]"):
        synth.synthesize(label[None], inst[None], feats[None])
    nan_photo = image.copy()
    nan_photo[3, 5] = np.nan
    with pytest.raises(ValueError, match=r"image holds NaN or inf \(first at batch 0, pixel y=3 x=5\)"):
        synth.synthesize(label, inst, "encode", image=nan_photo)
    with pytest.raises(ValueError, match=r"expected \[-1, 1\] \(for a 0..255 photo pass photo / 127.5 - 1\)"):
        synth.synthesize(label, inst, "encode", image=(image + 1) * 127.5)
    # Instance ids beyond int32 would wrap into other ids on the device.
    wide = inst.astype(np.int64)
    wide[wide == car] = 2**32 + car
    with pytest.raises(ValueError, match=r"instance ids span .* outside int32"):
        synth.synthesize(label, wide)


def test_synthesize_cli_writes_pngs_and_html(synth, tmp_path):
    assert synthesize_cli.main(["prog", f"--workdir={synth.workdir}", f"--out={tmp_path / 'out'}", "--num_inputs=2",
                                "--num_samples=2"]) == 0
    names = set(p.name for p in (tmp_path / "out").iterdir())
    assert {"0000_label.png", "0000_out0.png", "0000_out1.png", "0000_real.png", "0001_out1.png", "index.html"} <= names
    page = (tmp_path / "out" / "index.html").read_text()
    assert "<th>label</th><th>output 0</th><th>output 1</th><th>real</th>" in page


def test_label_feat_and_featureless_models(tmp_path, capsys):
    label, inst, image = fh.scene(0)
    config = fh.feature_config()
    config.model.instance_feat, config.model.label_feat = False, True
    workdir = fh.make_workdir(str(tmp_path / "label_feat"), config)
    bank, _ = fh.encode_bank(workdir)
    assert bank.meta["pool"] == "label" and 26 in bank.centers
    synth = Synthesizer.from_workdir(workdir)
    # Regions are label ids here; JSON-style string keys are accepted.
    assert synth.synthesize(label, inst, {"26": 0}).shape == (32, 64, 3)
    assert synth.synthesize(label, inst, "encode", image=image).shape == (32, 64, 3)
    config = fh.feature_config()
    config.model.instance_feat = False
    plain = Synthesizer.from_workdir(fh.make_workdir(str(tmp_path / "plain"), config))
    assert plain.synthesize(label, inst).shape == (32, 64, 3)
    with pytest.raises(ValueError, match="trained without model.instance_feat"):
        plain.synthesize(label, inst, {26000: 0})
    # --num_samples asks for feature draws this model cannot make: one output per input, and a note why.
    out = tmp_path / "plain_out"
    assert synthesize_cli.main(["prog", f"--workdir={plain.workdir}", f"--out={out}", "--num_inputs=1",
                                "--num_samples=3"]) == 0
    assert "note: --num_samples=3 ignored: this model was trained without instance features" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir() if "_out" in p.name) == ["0000_out0.png"]
    with pytest.raises(ValueError, match="no encoder to build a feature bank"):
        fh.encode_bank(plain.workdir)


def test_synthesize_cli_reads_an_official_folder_without_photos(synth, tmp_path):
    """Label/instance folders in, no {phase}_img: outputs and a page without a real column."""
    import shutil

    from pix2pixhd_jax.data import folders
    from pix2pixhd_jax.data.synthetic import generate_example

    root = tmp_path / "data"
    for i in range(2):
        folders.write_official_example(str(root), "test", f"{i:04d}", generate_example(7, i, 64, 32))
    shutil.rmtree(root / "test_img")
    assert synthesize_cli.main(["prog", f"--workdir={synth.workdir}", f"--out={tmp_path / 'out'}", "--source=folder",
                                f"--dataroot={root}", "--phase=test", "--num_inputs=5"]) == 0
    names = set(p.name for p in (tmp_path / "out").iterdir())
    assert {"0000_label.png", "0000_out0.png", "0001_out0.png"} <= names
    assert not any(n.endswith("_real.png") for n in names) and "0002_label.png" not in names


def test_a_config_saved_by_an_older_version_needs_defaults_and_says_so(synth, tmp_path):
    import json
    import shutil

    from pix2pixhd_jax.configs import default

    workdir = str(tmp_path / "older")
    shutil.copytree(synth.workdir, workdir)
    for path in (tmp_path / "older" / "checkpoints").glob("*/config/metadata"):
        saved = json.loads(path.read_text())
        del saved["model"]["feature_skip_G"], saved["model"]["encoder_image_skip"]  # keys added later
        path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="older version: pass defaults=pix2pixhd_jax.configs.default.get_config"):
        Synthesizer.from_workdir(workdir)
    older = Synthesizer.from_workdir(workdir, defaults=default.get_config())
    assert not older.config.model.feature_skip_G and not older.config.model.encoder_image_skip
