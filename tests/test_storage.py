"""storage.py on local paths and on gs:// against a real GCS server (fake-gcs-server), and every client
the project sends to a bucket: epath/gcsfs, Orbax (TensorStore arrays + JSON + grain iterator), TFDS
ArrayRecord data sources (array_record's C++ GCS client), tensorboardX event files, PIL and numpy."""
import json
import os
import struct
import subprocess
import sys
import uuid

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from gcs_emulator import BUCKET, gcs_emulator  # noqa: F401  (the session fixture)
from pix2pixhd_jax import storage


@pytest.fixture
def gcs_dir(gcs_emulator, request, monkeypatch, tmp_path):  # noqa: F811
    """A fresh gs:// folder for one test; the test runs in an empty cwd that must stay empty."""
    monkeypatch.chdir(tmp_path)
    yield f"gs://{BUCKET}/{request.node.name.replace('[', '-').rstrip(']')}-{uuid.uuid4().hex[:8]}"
    assert os.listdir(tmp_path) == [], "a gs:// operation wrote into the local working directory"


@pytest.fixture(params=["local", "gcs"])
def any_dir(request, tmp_path):
    """The same test on a local folder and on a gs:// folder."""
    if request.param == "local":
        return str(tmp_path / "out")
    return request.getfixturevalue("gcs_dir")


# Paths and errors: no server needed.

def test_urls_are_kept_and_local_paths_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(storage.path("gs://b/run1/checkpoints")) == "gs://b/run1/checkpoints"
    assert str(storage.path("gs://b/run1") / "metrics.jsonl") == "gs://b/run1/metrics.jsonl"
    assert str(storage.path("run1")) == str(tmp_path / "run1")
    assert storage.join("gs://b/run1", "samples", "x.png") == "gs://b/run1/samples/x.png"
    assert storage.join("run1", "x") == os.path.join("run1", "x")
    assert storage.is_remote("gs://b") and not storage.is_remote("/data/gs:/b") and not storage.is_remote("a/b")
    assert storage.bucket("gs://my-bucket/run/x") == "my-bucket"
    assert not os.path.exists(tmp_path / "gs:")


def test_open_refuses_append_on_objects():
    with pytest.raises(ValueError, match="append_text"):
        storage.open("gs://b/metrics.jsonl", "a")


def test_check_backend_names_what_to_install_or_set(monkeypatch):
    storage.check_backend(None, "", "relative/dir", "/abs/dir")  # local paths need nothing
    with pytest.raises(storage.StorageError, match=r"only local paths and gs://"):
        storage.check_backend("s3://b/run")

    real_find_spec = storage._find_spec
    monkeypatch.setattr(storage, "_find_spec", lambda m: None if m == "gcsfs" else real_find_spec(m))
    with pytest.raises(storage.StorageError, match=r"gs://b/run .*not installed \(missing gcsfs\): pip install -e '\.\[gcs\]'"):
        storage.check_backend("gs://b/run")
    monkeypatch.setattr(storage, "_find_spec", real_find_spec)

    for name in storage.EMULATOR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1")
    with pytest.raises(storage.StorageError, match=r"some clients only .*TENSORSTORE_GCS_HTTP_URL=\(unset\)"):
        storage.check_backend("gs://b/run")

    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")
    with pytest.raises(storage.StorageError, match=r"no Google credentials .*GOOGLE_APPLICATION_CREDENTIALS"):
        storage.check_backend("gs://b/run")


def test_check_backend_reports_an_unreachable_emulator(monkeypatch):
    port = 1  # nothing listens there
    for name, value in storage.emulator_env(f"http://127.0.0.1:{port}").items():
        monkeypatch.setenv(name, value)
    with pytest.raises(storage.StorageError, match=r"cannot reach Google Cloud Storage at http://127\.0\.0\.1:1"):
        storage.check_backend("gs://b/run", timeout_s=1.0)


# Against the emulator.

def test_check_backend_passes_on_the_emulator_and_names_a_missing_bucket(gcs_dir, monkeypatch):
    probes = []
    real_probe = storage._check_bucket
    monkeypatch.setattr(storage, "_check_bucket", lambda p, t: (probes.append(p), real_probe(p, t)))
    monkeypatch.setattr(storage, "_listed_buckets", set())
    storage.check_backend(gcs_dir)
    storage.check_backend(storage.join(gcs_dir, "other"))  # the bucket answered once: not listed again
    assert probes == [gcs_dir]
    for attempt in (1, 2):  # a missing bucket is asked for every time, and named
        with pytest.raises(storage.StorageError, match=r"bucket gs://no-such-bucket does not exist"):
            storage.check_backend("gs://no-such-bucket/run")
    assert len(probes) == 3


def test_read_write_append_list(any_dir):
    d = any_dir
    storage.makedirs(d)
    storage.write_text(storage.join(d, "config.json"), '{"a": 1}')
    storage.write_bytes(storage.join(d, "sub", "blob.bin"), b"\x00\x01")
    for line in ('{"step": 1}\n', '{"step": 2}\n'):
        storage.append_text(storage.join(d, "metrics.jsonl"), line)
    assert json.loads(storage.read_text(storage.join(d, "config.json"))) == {"a": 1}
    assert storage.read_bytes(storage.join(d, "sub", "blob.bin")) == b"\x00\x01"
    assert [json.loads(x)["step"] for x in storage.read_text(storage.join(d, "metrics.jsonl")).splitlines()] == [1, 2]
    assert storage.listdir(d) == ["config.json", "metrics.jsonl", "sub"]
    assert storage.isdir(storage.join(d, "sub")) and not storage.isdir(storage.join(d, "config.json"))
    assert storage.isfile(storage.join(d, "config.json")) and not storage.isfile(storage.join(d, "sub"))
    assert storage.exists(storage.join(d, "sub")) and not storage.exists(storage.join(d, "missing.json"))
    with pytest.raises(FileNotFoundError):
        storage.listdir(storage.join(d, "missing"))
    assert [(os.path.relpath(w, d), ds, fs) for w, ds, fs in storage.walk(d)] == [
        (".", ["sub"], ["config.json", "metrics.jsonl"]), ("sub", [], ["blob.bin"])]
    storage.remove(storage.join(d, "config.json"))
    assert not storage.exists(storage.join(d, "config.json"))


def test_copy_and_copytree_between_local_and_gcs(gcs_dir, tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "x.bin").write_bytes(b"x" * 100_000)
    (src / "top.txt").write_text("top")
    written = storage.copytree(src, gcs_dir)
    assert sorted(written) == [f"{gcs_dir}/a/b/x.bin", f"{gcs_dir}/top.txt"]
    back = tmp_path_factory.mktemp("back")
    storage.copytree(gcs_dir, back)
    assert (back / "a" / "b" / "x.bin").read_bytes() == b"x" * 100_000 and (back / "top.txt").read_text() == "top"


def test_a_file_written_by_another_client_is_seen_at_once(gcs_dir):
    """Listings are not cached: what another host writes (here google-cloud-storage) is visible."""
    from google.cloud import storage as gcs

    storage.write_text(storage.join(gcs_dir, "a.txt"), "a")
    assert storage.listdir(gcs_dir) == ["a.txt"] and not storage.exists(storage.join(gcs_dir, "b.txt"))
    gcs.Client(project=None).bucket(BUCKET).blob(gcs_dir.split(f"{BUCKET}/", 1)[1] + "/b.txt").upload_from_string("b")
    assert storage.exists(storage.join(gcs_dir, "b.txt"))
    assert storage.listdir(gcs_dir) == ["a.txt", "b.txt"]


def test_the_emulator_enforces_generation_preconditions(gcs_dir):
    """TensorStore's safe concurrent writes rely on ifGenerationMatch; the server must really check it."""
    from google.api_core import exceptions
    from google.cloud import storage as gcs

    blob = gcs.Client(project=None).bucket(BUCKET).blob(gcs_dir.split(f"{BUCKET}/", 1)[1] + "/once")
    blob.upload_from_string("first", if_generation_match=0)
    with pytest.raises(exceptions.PreconditionFailed):
        blob.upload_from_string("second", if_generation_match=0)


def test_pil_and_numpy_through_storage_open(any_dir):
    label = (np.arange(12 * 16) % 35).astype(np.uint8).reshape(12, 16)
    inst = (np.arange(12 * 16) * 97).astype(np.uint16).reshape(12, 16)
    for name, array in (("label.png", label), ("inst.png", inst)):
        with storage.open(storage.join(any_dir, name), "wb") as f:
            Image.fromarray(array).save(f, format="PNG")
        with storage.open(storage.join(any_dir, name), "rb") as f:
            np.testing.assert_array_equal(np.asarray(Image.open(f)), array)
    bank = storage.join(any_dir, "bank.npz")
    with storage.open(bank, "wb") as f:
        np.savez(f, centers=np.linspace(0, 1, 12).reshape(3, 4), meta=np.array(json.dumps({"k": 3})))
    with storage.open(bank, "rb") as f, np.load(f, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["centers"], np.linspace(0, 1, 12).reshape(3, 4))
        assert json.loads(str(z["meta"])) == {"k": 3}


def _state(seed: int) -> dict:
    """A small sharded pytree like the GAN state: params split over the 8 devices, a replicated step."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    rng = np.random.default_rng(seed)
    return {"g_params": {"w": jax.device_put(rng.normal(size=(16, 3)).astype(np.float32), split)},
            "d_params": {"b": jax.device_put(rng.normal(size=(5,)).astype(np.float32), repl)},
            "step": jax.device_put(np.int32(seed), repl)}


def test_orbax_checkpoint_manager_saves_and_restores_on_gcs(gcs_dir):
    """What checkpointing.py does: Composite(state=StandardSave, config=JsonSave, data_iter=grain) on gs://."""
    directory = storage.join(gcs_dir, "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=True)

    def handlers():
        return {"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler(),
                "data_iter": grain.checkpoint.CheckpointHandler()}

    data_iter = iter(grain.MapDataset.range(20).batch(2).to_iter_dataset())
    with ocp.CheckpointManager(directory, options=options, item_handlers=handlers()) as manager:
        for step in (1, 2, 3):
            next(data_iter)
            manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_state(step)),
                                                       config=ocp.args.JsonSave({"step": step, "ngf": 8}),
                                                       data_iter=grain.checkpoint.CheckpointSave(data_iter)))
        manager.wait_until_finished()
    expected_next = next(data_iter)
    assert {"2", "3"} <= set(storage.listdir(directory)) and "1" not in storage.listdir(directory)

    saved = _state(3)
    abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), saved)
    resumed_iter = iter(grain.MapDataset.range(20).batch(2).to_iter_dataset())
    with ocp.CheckpointManager(directory, options=options, item_handlers=handlers()) as manager:
        assert manager.all_steps() == [2, 3] and manager.latest_step() == 3
        assert manager.item_metadata(3)["state"]["g_params"]["w"].shape == (16, 3)
        restored = manager.restore(3, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), config=ocp.args.JsonRestore(),
            data_iter=grain.checkpoint.CheckpointRestore(resumed_iter)))
    assert restored["config"] == {"step": 3, "ngf": 8}
    for got, want in zip(jax.tree_util.tree_leaves(restored["state"]), jax.tree_util.tree_leaves(saved)):
        assert got.sharding == want.sharding
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    np.testing.assert_array_equal(next(resumed_iter), expected_next)


def test_tfds_array_record_data_source_on_gcs(gcs_dir, tmp_path_factory):
    """ArrayRecord is written locally (its writer cannot open gs://), uploaded, then read from the bucket."""
    from pix2pixhd_jax.data import tfds_builders as tb

    local = tmp_path_factory.mktemp("tfds")
    cfg = tb.SyntheticStreetsConfig(name="tiny", width=32, height=16, num_train=3, num_test=1, seed=7)
    tb.SyntheticStreets(config=cfg, data_dir=str(local), file_format="array_record").download_and_prepare()
    data_dir = storage.join(gcs_dir, "tfds")
    storage.copytree(local, data_dir)
    remote = tb.TfdsSource("synthetic_streets/tiny", split="train", data_dir=data_dir)
    here = tb.TfdsSource("synthetic_streets/tiny", split="train", data_dir=str(local))
    assert len(remote) == 3
    for i in (0, 2):
        for k in ("label", "inst", "image"):
            np.testing.assert_array_equal(remote[i][k], here[i][k])


def _events(data: bytes) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in a TFRecord-framed event file."""
    from tensorboardX.proto import event_pb2

    out, offset = [], 0
    while offset < len(data):
        (n,) = struct.unpack("<Q", data[offset:offset + 8])
        event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + n])
        out += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
        offset += 12 + n + 4
    return out


def test_tensorboardx_writes_event_files_to_gcs(gcs_dir):
    """tensorboardX has its own gs:// writer (google-cloud-storage); each flush rewrites the object.

    It runs in a child process that exits while the server is up: tensorboardX keeps every writer
    alive in an atexit hook and its GCS writer uploads once more when destroyed at interpreter exit.
    """
    logdir = storage.join(gcs_dir, "tensorboard")
    script = (
        "import sys\n"
        "from tensorboardX import SummaryWriter\n"
        "writer = SummaryWriter(sys.argv[1])\n"
        "for step in range(3):\n"
        "    writer.add_scalar('loss_G', 0.5 * step, step)\n"
        "writer.flush()\n"
        "writer.add_scalar('loss_G', 9.0, 10)\n"
        "writer.close()\n")
    subprocess.run([sys.executable, "-c", script, logdir], check=True, timeout=60)
    [name] = storage.listdir(logdir)
    assert name.startswith("events.out.tfevents.")
    assert _events(storage.read_bytes(storage.join(logdir, name))) == [
        (0, "loss_G", 0.0), (1, "loss_G", 0.5), (2, "loss_G", 1.0), (10, "loss_G", 9.0)]
