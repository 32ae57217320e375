"""The pod workflow against a real local GCS server (fake-gcs-server): a tiny run with its workdir on
gs:// (checkpoints, resume, samples, metrics, TensorBoard), training from TFDS ArrayRecord data in a
bucket, synthesis reading the bucket and writing to it, weights read from gs://, and the error a
user gets for a gs:// workdir without credentials. Nothing may appear in the local working folder.

The run uses configs/tiny_test.py as tests/test_train.py does, so its programs come from the
compile cache.
"""
import io
import json
import os
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from pix2pixhd_jax.configs import tiny_test
from gcs_emulator import BUCKET, gcs_emulator  # noqa: F401  (the session fixture)
from pix2pixhd_jax import checkpointing, storage, train
from pix2pixhd_jax.cli import synthesize as synthesize_cli, train as train_cli
from pix2pixhd_jax.inference import Synthesizer
from pix2pixhd_jax.models import vgg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny_test.py")


def _config(max_steps: int, **data):
    config = tiny_test.get_config()
    config.train.max_steps, config.train.checkpoint_every = max_steps, 1
    for key, value in data.items():
        config.data[key] = value
    return config


def _url(name: str) -> str:
    return f"gs://{BUCKET}/{name}-{uuid.uuid4().hex[:8]}"


def _metric_lines(workdir: str) -> list[dict]:
    return [json.loads(line) for line in storage.read_text(storage.join(workdir, "metrics.jsonl")).splitlines()]


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    """Run in an empty folder that must stay empty: gs:// work leaves nothing local."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert os.listdir(tmp_path) == [], "a gs:// run wrote into the local working directory"


@pytest.fixture(scope="module")
def gcs_run(gcs_emulator, tmp_path_factory):  # noqa: F811
    """A 2-step tiny run (a checkpoint per step) with its workdir in the bucket."""
    cwd = tmp_path_factory.mktemp("cwd")
    workdir = _url("run1")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        result = train.run(_config(2), workdir)
    assert os.listdir(cwd) == []
    return workdir, result


def test_training_on_gcs_checkpoints_resumes_and_writes_samples_and_metrics(gcs_run, empty_cwd):
    workdir, first = gcs_run
    assert first.step == 2
    ckpts = checkpointing.checkpoint_directory(workdir)
    assert ckpts == f"{workdir}/checkpoints"
    assert {"1", "2"} <= set(storage.listdir(ckpts))
    assert checkpointing.COMMIT_SUCCESS_FILE in storage.listdir(storage.join(ckpts, "2"))
    assert checkpointing.structure_problem(storage.join(ckpts, "2")) is None
    assert json.loads(storage.read_text(storage.join(workdir, "config.json")))["train"]["max_steps"] == 2
    lines = _metric_lines(workdir)
    assert [l["step"] for l in lines if "loss_G" in l] == [1, 2]
    samples = storage.listdir(storage.join(workdir, "samples"))
    assert {"index.html", "step_00000000.png", "step_00000002.png"} <= set(samples)
    with storage.open(storage.join(workdir, "samples", "step_00000002.png")) as f:
        assert Image.open(f).size[0] > 0
    assert "step_00000002.png" in storage.read_text(storage.join(workdir, "samples", "index.html"))
    [events] = storage.listdir(storage.join(workdir, "tensorboard"))
    assert events.startswith("events.out.tfevents.")
    assert storage.read_bytes(storage.join(workdir, "tensorboard", events))

    resumed = train.run(_config(3), workdir)
    assert resumed.step == 3 and not resumed.already_done
    assert [l["step"] for l in _metric_lines(workdir) if "loss_G" in l] == [1, 2, 3]  # appended, not replaced
    assert "3" in storage.listdir(ckpts)

    before = len(_metric_lines(workdir))
    again = train.run(_config(3), workdir)
    assert again.already_done and again.step == 3
    assert len(_metric_lines(workdir)) == before


def test_synthesizer_and_synthesize_cli_read_and_write_the_bucket(gcs_run, empty_cwd, capsys):
    workdir, _ = gcs_run
    synth = Synthesizer.from_workdir(workdir)
    assert synth.workdir == workdir and synth.step >= 2
    out = _url("synth")
    assert synthesize_cli.main(["prog", f"--workdir={workdir}", f"--out={out}", "--num_inputs=2"]) == 0
    names = set(storage.listdir(out))
    assert {"0000_label.png", "0000_out0.png", "0001_out0.png", "0000_real.png", "index.html"} <= names
    with storage.open(storage.join(out, "0000_out0.png")) as f:
        assert np.asarray(Image.open(f)).shape == (32, 64, 3)
    assert f"{out}/index.html" in capsys.readouterr().out


def test_training_from_tfds_array_record_data_in_the_bucket(gcs_emulator, empty_cwd, tmp_path_factory):  # noqa: F811
    from pix2pixhd_jax.data import tfds_builders as tb

    local = tmp_path_factory.mktemp("tfds")
    # tiny_test's 8 examples: the same steps per epoch, so the same compiled train step as the other tiny runs.
    cfg = tb.SyntheticStreetsConfig(name="tiny", width=64, height=32, num_train=8, num_test=2, seed=7)
    tb.SyntheticStreets(config=cfg, data_dir=str(local), file_format="array_record").download_and_prepare()
    data_dir = _url("tfds")
    storage.copytree(local, data_dir)
    workdir = _url("run_tfds")
    result = train.run(_config(1, source="tfds", tfds_name="synthetic_streets/tiny", tfds_data_dir=data_dir), workdir)
    assert result.step == 1
    assert "1" in storage.listdir(checkpointing.checkpoint_directory(workdir))
    assert json.loads(storage.read_text(storage.join(workdir, "config.json")))["data"]["tfds_data_dir"] == data_dir


def test_weights_load_from_gcs_npz_and_pth(gcs_emulator, empty_cwd):  # noqa: F811
    index = vgg.torchvision_feature_index("vgg19")
    rng = np.random.default_rng(0)
    sd, cin = {}, 3
    for name in ("conv1_1", "conv1_2", "conv2_1"):
        cout = vgg.WIDTHS[int(name[4]) - 1]
        sd[f"features.{index[name]}.weight"] = rng.normal(size=(cout, cin, 3, 3)).astype(np.float32)
        sd[f"features.{index[name]}.bias"] = rng.normal(size=(cout,)).astype(np.float32)
        cin = cout
    folder = _url("weights")
    buf = io.BytesIO()
    np.savez(buf, **sd)
    storage.write_bytes(storage.join(folder, "vgg19.npz"), buf.getvalue())
    buf = io.BytesIO()
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, buf)
    storage.write_bytes(storage.join(folder, "vgg19.pth"), buf.getvalue())

    for name in ("vgg19.npz", "vgg19.pth"):
        loaded = vgg.load_state_dict_file(storage.join(folder, name))
        assert sorted(loaded) == sorted(sd)
        for k in sd:
            np.testing.assert_array_equal(loaded[k], sd[k])
    _, variables = vgg.load_vgg("vgg19", ("relu1_1", "relu2_1"), storage.join(folder, "vgg19.npz"), False)
    np.testing.assert_allclose(np.asarray(variables["params"]["conv2_1"]["bias"]),
                               sd[f"features.{index['conv2_1']}.bias"])
    with pytest.raises(FileNotFoundError, match=r"weights file 'gs://.*/missing\.npz' not found"):
        vgg.load_state_dict_file(storage.join(folder, "missing.npz"))


def test_gcs_workdir_without_credentials_fails_before_any_work(monkeypatch, empty_cwd, capsys):
    for name in storage.EMULATOR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")
    with pytest.raises(storage.StorageError, match=r"gs://some-bucket/run1 .*no Google credentials.*"
                                                   r"GOOGLE_APPLICATION_CREDENTIALS.*STORAGE_EMULATOR_HOST"):
        train.run(_config(1), "gs://some-bucket/run1")
    # The command prints one line naming what to set, and creates nothing (no ./gs:/ folder).
    status = train_cli.main(["prog", f"--config={TINY}", "--workdir=gs://some-bucket/run1"])
    err = capsys.readouterr().err
    assert status != 0 and "GOOGLE_APPLICATION_CREDENTIALS" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2


def test_official_folders_in_the_bucket_are_read_and_prepared_into_gcs_tfds(gcs_emulator, empty_cwd):  # noqa: F811
    from pix2pixhd_jax.data import folders, synthetic, tfds_builders as tb

    root = _url("folders")
    examples = [synthetic.generate_example(3, i, 64, 32) for i in range(2)]
    for i, ex in enumerate(examples):
        folders.write_official_example(root, "train", f"{i:06d}", ex)
    source = folders.OfficialFolderSource(root, "train", label_nc=35)
    assert len(source) == 2
    for k in ("label", "inst", "image"):
        np.testing.assert_array_equal(source[1][k], examples[1][k])

    data_dir = _url("tfds_prepared")
    builder = tb.prepare("paired_folders/official", data_dir=data_dir, manual_dir=root)
    assert str(builder.data_dir).startswith(data_dir)
    remote = tb.TfdsSource("paired_folders/official", split="train", data_dir=data_dir)
    np.testing.assert_array_equal(remote[0]["label"], examples[0]["label"])


def test_tfds_prepare_makes_a_small_synthetic_set_in_the_bucket_and_leaves_no_temporary_folder(
        gcs_emulator, empty_cwd, tmp_path_factory, monkeypatch, capsys):  # noqa: F811
    """It used to take 578 s for the full 3500-example set and leave an empty tmp*tfds folder behind."""
    from pix2pixhd_jax.cli import tfds_prepare
    from pix2pixhd_jax.data import synthetic, tfds_builders as tb

    scratch = tmp_path_factory.mktemp("tmp")
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    data_dir = _url("tfds_small")
    assert tfds_prepare.main(["prog", "--dataset=synthetic_streets/512x256", "--num_train=3", "--num_test=2",
                              f"--data_dir={data_dir}"]) == 0
    out = capsys.readouterr().out
    assert "train=3" in out and "test=2" in out and "--config.data.tfds_name=synthetic_streets/512x256_n3_2" in out
    source = tb.TfdsSource("synthetic_streets/512x256_n3_2", split="train", data_dir=data_dir)
    assert len(source) == 3
    np.testing.assert_array_equal(source[2]["label"], synthetic.generate_example(0, 2, 512, 256)["label"])
    assert os.listdir(scratch) == []  # the staging folder and TFDS's own temporaries are gone
    with pytest.raises(ValueError, match="make a small synthetic_streets set"):
        tb.prepare("paired_folders/official", data_dir=data_dir, num_train=3)
