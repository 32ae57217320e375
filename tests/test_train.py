"""The real train.run on a shrunken config: resume, re-sharding, bad checkpoints, outputs (staging:
test_staging.py).

One tiny run (the module fixture) serves as the uninterrupted run and, through its step-3 checkpoint,
the interrupted one, and as the checkpoint of another config or device count.
"""
import json
import os
import shutil
import time

import jax
import numpy as np
import pytest

import fault_helpers as faults
from pix2pixhd_jax import checkpointing, train
from pix2pixhd_jax.configs import default
from run_helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




def _leaves(tree):
    return jax.tree_util.tree_leaves(jax.device_get(tree))


def _assert_trees_equal(a, b, atol=0.0):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


def _metric_lines(workdir):
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A global-generator run of 6 steps, straight through, with checkpoints at steps 3 and 6."""
    workdir = str(tmp_path_factory.mktemp("train") / "straight")
    return workdir, train.run(tiny_config(train__max_steps=6, train__checkpoint_every=3), workdir)


def _copy_up_to(workdir, step, dest):
    """A copy of `workdir` without its checkpoints and metric lines after `step`: that run as if it had
    stopped right after saving `step`."""
    shutil.copytree(workdir, dest)
    for name in os.listdir(os.path.join(dest, "checkpoints")):
        if name.isdigit() and int(name) > step:
            shutil.rmtree(os.path.join(dest, "checkpoints", name))
    kept = [line for line in _metric_lines(dest) if line["step"] <= step]
    with open(os.path.join(dest, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in kept)
    return dest


def test_resume_equals_uninterrupted_and_writes_outputs(stage1, tmp_path):
    workdir, straight = stage1
    interrupted = _copy_up_to(workdir, 3, str(tmp_path / "resumed"))
    resumed = train.run(tiny_config(train__max_steps=6), interrupted)
    assert straight.step == resumed.step == 6 and not resumed.already_done
    for side in ("g_params", "d_params", "g_opt_state", "d_opt_state"):
        _assert_trees_equal(getattr(straight.state, side), getattr(resumed.state, side), atol=1e-6)
    # Same batches after the restart: the logged losses of steps 4..6 agree, each written once.
    def losses(path):
        return [(line["step"], line["loss_G"]) for line in _metric_lines(path) if "loss_G" in line]
    a, b = dict(losses(workdir)), losses(interrupted)
    assert [step for step, _ in b] == [1, 2, 3, 4, 5, 6]
    for step, loss in b[3:]:
        assert loss == pytest.approx(a[step], rel=1e-5)
    samples = os.listdir(os.path.join(workdir, "samples"))
    assert "index.html" in samples and "step_00000006.png" in samples
    assert _tensorboard_tags(os.path.join(workdir, "tensorboard")) >= {"loss_G", "loss_D", "holdout_L1"}


def test_a_finished_run_returns_at_once_without_new_metrics(stage1, monkeypatch):
    workdir, straight = stage1
    before = len(_metric_lines(workdir))

    def no_compile(*args, **kwargs):
        raise AssertionError("a finished run compiled its train step")

    monkeypatch.setattr(train, "compile_step", no_compile)
    again = train.run(tiny_config(train__max_steps=6), workdir)
    assert again.already_done and again.step == 6
    assert len(_metric_lines(workdir)) == before
    _assert_trees_equal(again.state.g_params, straight.state.g_params)


def _tensorboard_tags(folder):
    """Scalar tags in TensorBoard event files (TFRecord framing: length, crc, payload, crc)."""
    import struct

    from tensorboardX.proto import event_pb2

    tags = set()
    for name in os.listdir(folder):
        data = open(os.path.join(folder, name), "rb").read()
        i = 0
        while i < len(data):
            n = struct.unpack("<Q", data[i:i + 8])[0]
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + n])
            tags |= {v.tag for v in event.summary.value}
            i += 12 + n + 4
    return tags


def test_checkpoint_from_2_devices_resumes_on_1(stage1, tmp_path, monkeypatch):
    """Another device count on resume (stage1 trained on 2); the mesh-shape matrix is in test_sharding."""
    from pix2pixhd_jax import host_memory

    workdir = str(tmp_path / "w")
    shutil.copytree(stage1[0], workdir)
    released = []
    release = host_memory.release_freed
    monkeypatch.setattr(host_memory, "release_freed", lambda: released.append(release()))
    out = train.run(tiny_config(num_devices=1, train__max_steps=7), workdir)
    assert out.step == 7 and out.outcome == train.FINISHED
    # The resumed run hands back what set-up freed: after the state, before the loop.
    assert len(released) == 2, released
    assert len(jax.tree_util.tree_leaves(out.state.g_params)[0].sharding.device_set) == 1


def test_checkpoint_of_another_config_names_the_mismatched_arrays(stage1):
    workdir, _ = stage1
    with pytest.raises(ValueError, match=r"(?s)does not match this config.*generator/front/conv/kernel: checkpoint \(7, 7, 36, 4\) vs config \(7, 7, 36, 8\)"):
        train.run(tiny_config(model__ngf=8, train__max_steps=8), workdir)


def test_a_key_the_saved_config_predates_counts_as_its_default_on_resume(stage1, tmp_path):
    """A run saved before model.noise_inputs existed trained without noise: resuming with it on is refused,
    naming the key beside the arrays it adds; resuming as the run was (the default) is not."""
    workdir = _copy_up_to(stage1[0], 6, str(tmp_path / "old"))
    meta = os.path.join(workdir, "checkpoints", "6", "config", "metadata")
    saved = json.load(open(meta))
    del saved["model"]["noise_inputs"]
    with open(meta, "w") as f:
        json.dump(saved, f)
    with pytest.raises(ValueError, match=r"(?s)does not match this config.*up0/noise/scale: missing from the "
                                         r"checkpoint.*The saved config differs in: model.noise_inputs "
                                         r"\(checkpoint False, given True\)"):
        train.run(tiny_config(model__noise_inputs=True, train__max_steps=8), workdir, defaults=default.get_config())
    assert train.run(tiny_config(train__max_steps=6), workdir, defaults=default.get_config()).outcome == \
        train.ALREADY_DONE


def test_a_norm_change_on_resume_is_refused_with_the_keys(stage1):
    """model.norm 'instance' -> 'none' changes no shape; the saved config is compared (issue 14, item 4)."""
    workdir, _ = stage1
    with pytest.raises(checkpointing.CheckpointError, match=r"(?s)trained with another config.*"
                                                            r"model.norm: checkpoint 'instance' vs given 'none'.*"
                                                            r"--config.model.norm='instance'"):
        train.run(tiny_config(model__norm="none", train__max_steps=8), workdir)


def test_a_corrupt_or_read_only_checkpoint_fails_at_once_naming_it(stage1, tmp_path):
    from pix2pixhd_jax.inference import Synthesizer

    workdir = _copy_up_to(stage1[0], 6, str(tmp_path / "w"))
    shutil.rmtree(os.path.join(workdir, "checkpoints", "3"))  # step 6 is the only one
    with faults.read_only(os.path.join(workdir, "checkpoints")):
        t0 = time.time()
        with pytest.raises(checkpointing.CheckpointError, match="cannot write checkpoints to .* not writable"):
            train.run(tiny_config(train__max_steps=8), workdir)
        assert time.time() - t0 < 150  # was a ~5 minute stall in the first async save
        assert train.run(tiny_config(train__max_steps=6), workdir).already_done  # reading needs no write access
    step_dir = os.path.join(workdir, "checkpoints", "6")
    faults.truncate_array_data(step_dir)
    with pytest.raises(checkpointing.CheckpointError, match=rf"(?s)checkpoint step 6 at {step_dir} cannot be used: "
                                                            r"reading it failed.*No earlier intact step"):
        train.run(tiny_config(train__max_steps=8), workdir)
    with pytest.raises(checkpointing.CheckpointError, match=rf"checkpoint step 6 at {step_dir} cannot be used"):
        Synthesizer.from_workdir(workdir)


def test_a_bad_config_fails_before_anything_is_written(tmp_path):
    for bad in ({"train__log_every": 0}, {"model__ngf": 0}, {"data__batch_size": 0}, {"optim__beta1_G": 1.0},
                {"train__max_steps": -1}, {"optim__lr_G": -1e-4}, {"model__n_blocks_global": -1},
                {"train__keep_checkpoints": 0}, {"train__checkpoint_every": 0}, {"num_devices": -1}):
        with pytest.raises(ValueError, match=list(bad)[0].split("__")[-1]):
            train.run(tiny_config(**bad), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_trains_from_official_folder_layout(tmp_path):
    from pix2pixhd_jax.data.make_synthetic import write_dataset

    # As many examples as tiny_test's synthetic set: the same steps per epoch, so the same compiled step.
    write_dataset(str(tmp_path / "data"), 8, width=64, height=32, seed=3)
    out = train.run(tiny_config(data__source="folder", data__dataroot=str(tmp_path / "data"), train__max_steps=1),
                    str(tmp_path / "w"))
    assert out.step == 1 and np.isfinite(out.holdout_l1[-1][1])
    # A label id the config cannot hold is refused with the value and the file, before the workdir is made.
    with pytest.raises(ValueError, match=r"label \d+ in .*train_label.* >= label_nc=20"):
        train.run(tiny_config(data__source="folder", data__dataroot=str(tmp_path / "data"), model__label_nc=20,
                          train__max_steps=1), str(tmp_path / "w2"))
    assert not (tmp_path / "w2").exists()
