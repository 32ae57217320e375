"""The real train.run on a shrunken config: resume, re-sharding, staging, bad checkpoints, outputs.

One tiny run (the module fixture) serves as the resumed run, the mismatched checkpoint and the
stage-1 run of the staging test; everything else about staging is tested on initialised states.
"""
import json
import os
import shutil
import time

import jax
import numpy as np
import pytest
from flax import traverse_util

import fault_helpers as faults
from pix2pixhd_jax.configs import tiny_test
from pix2pixhd_jax import checkpointing, staging, train
from pix2pixhd_jax.optim import mask_frozen_trunk, official_lr
from pix2pixhd_jax.train_step import build_program

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**overrides):
    config = tiny_test.get_config()
    for key, value in overrides.items():
        section, name = key.split("__") if "__" in key else (None, key)
        (config[section] if section else config)[name] = value
    return config


def _leaves(tree):
    return jax.tree_util.tree_leaves(jax.device_get(tree))


def _assert_trees_equal(a, b, atol=0.0):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


def _metric_lines(workdir):
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A global-generator run of 6 steps, straight through."""
    workdir = str(tmp_path_factory.mktemp("train") / "straight")
    return workdir, train.run(_config(train__max_steps=6), workdir)


def test_resume_equals_uninterrupted_and_writes_outputs(stage1, tmp_path):
    workdir, straight = stage1
    train.run(_config(train__max_steps=3), str(tmp_path / "resumed"))
    resumed = train.run(_config(train__max_steps=6), str(tmp_path / "resumed"))
    assert straight.step == resumed.step == 6
    for side in ("g_params", "d_params", "g_opt_state", "d_opt_state"):
        _assert_trees_equal(getattr(straight.state, side), getattr(resumed.state, side), atol=1e-6)
    # Same batches after the restart: the logged losses of steps 4..6 agree.
    def losses(path):
        return {line["step"]: line["loss_G"] for line in _metric_lines(path) if "loss_G" in line}
    a, b = losses(workdir), losses(str(tmp_path / "resumed"))
    for step in (4, 5, 6):
        assert b[step] == pytest.approx(a[step], rel=1e-5)
    samples = os.listdir(os.path.join(workdir, "samples"))
    assert "index.html" in samples and "step_00000006.png" in samples
    assert _tensorboard_tags(os.path.join(workdir, "tensorboard")) >= {"loss_G", "loss_D", "holdout_L1"}


def test_a_finished_run_returns_at_once_without_new_metrics(stage1, monkeypatch):
    workdir, straight = stage1
    before = len(_metric_lines(workdir))

    def no_compile(*args, **kwargs):
        raise AssertionError("a finished run compiled its train step")

    monkeypatch.setattr(train, "compile_step", no_compile)
    again = train.run(_config(train__max_steps=6), workdir)
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
    out = train.run(_config(num_devices=1, train__max_steps=7), workdir)
    assert out.step == 7 and out.outcome == train.FINISHED
    # The resumed run hands back what set-up freed: after the state, before the loop.
    assert len(released) == 2, released
    assert len(jax.tree_util.tree_leaves(out.state.g_params)[0].sharding.device_set) == 1


def test_checkpoint_of_another_config_names_the_mismatched_arrays(stage1):
    workdir, _ = stage1
    with pytest.raises(ValueError, match=r"(?s)does not match this config.*generator/front/conv/kernel: checkpoint \(7, 7, 36, 4\) vs config \(7, 7, 36, 8\)"):
        train.run(_config(model__ngf=8, train__max_steps=8), workdir)


def test_a_norm_change_on_resume_is_refused_with_the_keys(stage1):
    """model.norm 'instance' -> 'none' changes no shape; the saved config is compared (issue 14, item 4)."""
    workdir, _ = stage1
    with pytest.raises(checkpointing.CheckpointError, match=r"(?s)trained with another config.*"
                                                            r"model.norm: checkpoint 'instance' vs given 'none'.*"
                                                            r"--config.model.norm='instance'"):
        train.run(_config(model__norm="none", train__max_steps=8), workdir)


def test_a_corrupt_or_read_only_checkpoint_fails_at_once_naming_it(stage1, tmp_path):
    from pix2pixhd_jax.inference import Synthesizer

    workdir = str(tmp_path / "w")
    shutil.copytree(stage1[0], workdir)
    with faults.read_only(os.path.join(workdir, "checkpoints")):
        t0 = time.time()
        with pytest.raises(checkpointing.CheckpointError, match="cannot write checkpoints to .* not writable"):
            train.run(_config(train__max_steps=8), workdir)
        assert time.time() - t0 < 150  # was a ~5 minute stall in the first async save
        assert train.run(_config(train__max_steps=6), workdir).already_done  # reading needs no write access
    step_dir = os.path.join(workdir, "checkpoints", "6")
    faults.truncate_array_data(step_dir)
    with pytest.raises(checkpointing.CheckpointError, match=rf"(?s)checkpoint step 6 at {step_dir} cannot be used: "
                                                            r"reading it failed.*No earlier intact step"):
        train.run(_config(train__max_steps=8), workdir)
    with pytest.raises(checkpointing.CheckpointError, match=rf"checkpoint step 6 at {step_dir} cannot be used"):
        Synthesizer.from_workdir(workdir)


def test_a_bad_config_fails_before_anything_is_written(tmp_path):
    for bad in ({"train__log_every": 0}, {"model__ngf": 0}, {"data__batch_size": 0}, {"optim__beta1_G": 1.0},
                {"train__max_steps": -1}, {"optim__lr_G": -1e-4}, {"model__n_blocks_global": -1},
                {"train__keep_checkpoints": 0}, {"train__checkpoint_every": 0}, {"num_devices": -1}):
        with pytest.raises(ValueError, match=list(bad)[0].split("__")[-1]):
            train.run(_config(**bad), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


LOCAL = dict(model__netG="local", model__ngf=2, model__num_D=3, optim__niter_fix_global=1,
             data__synthetic_width=128, data__synthetic_height=64)


def _init_state(config, height, width):
    program = build_program(config, height=height, width=width, steps_per_epoch=4)
    return jax.jit(program.init)(jax.random.PRNGKey(config.seed))


def test_stage_transfer_maps_g1_into_the_trunk_and_d_scales_by_name(stage1):
    _, result = stage1
    g1 = traverse_util.flatten_dict(jax.device_get(result.state.g_params["generator"]))
    local = _init_state(_config(**LOCAL), 64, 128)
    new, copied, fresh = staging.transfer_from_stage1(local, result.state)
    g2 = traverse_util.flatten_dict(jax.device_get(new.g_params["generator"]))
    trunk = {k[1:]: v for k, v in g2.items() if k[0] == "global_trunk"}
    assert set(trunk) == {k for k in g1 if k[0] != "out"}  # G1's output conv has no partner
    for k, v in trunk.items():
        np.testing.assert_array_equal(v, g1[k])
    assert any(p.startswith("generator/enh1") for p in fresh)
    # Official naming puts scale{i} at the same absolute resolution: scales 0, 1 copied, 2 fresh.
    assert any(p.startswith("scale0/") for p in copied) and any(p.startswith("scale2/") for p in fresh)
    d1 = set(traverse_util.flatten_dict(jax.device_get(result.state.d_params)))
    assert d1 <= set(traverse_util.flatten_dict(jax.device_get(new.d_params)))


def test_fixed_trunk_gets_no_update_while_fixed():
    config = _config(**LOCAL)
    state = _init_state(config, 64, 128)
    grads = jax.tree_util.tree_map(np.ones_like, jax.device_get(state.g_params))
    masked = traverse_util.flatten_dict(mask_frozen_trunk(grads, np.bool_(True)))
    assert all((v == 0).all() for k, v in masked.items() if k[1] == "global_trunk")
    assert all((v == 1).all() for k, v in masked.items() if k[1] != "global_trunk")
    free = traverse_util.flatten_dict(mask_frozen_trunk(grads, np.bool_(False)))
    assert all((v == 1).all() for v in free.values())


def test_init_from_trains_the_enhancer_around_a_fixed_trunk_then_everything(stage1, tmp_path):
    """End to end: stage 2 from stage 1's workdir; 8 examples / batch 2 = 4 steps fixed, then joint."""
    workdir, result = stage1
    g1 = traverse_util.flatten_dict(jax.device_get(result.state.g_params["generator"]))
    local = dict(LOCAL, train__init_from=workdir)
    fixed = train.run(_config(train__max_steps=4, **local), str(tmp_path / "local"))
    g2 = traverse_util.flatten_dict(jax.device_get(fixed.state.g_params["generator"]))
    trunk = {k[1:]: v for k, v in g2.items() if k[0] == "global_trunk"}
    assert trunk and all(np.array_equal(v, g1[k]) for k, v in trunk.items())
    start = staging.transfer_from_stage1(_init_state(_config(**local), 64, 128), result.state)[0]
    g_start = traverse_util.flatten_dict(jax.device_get(start.g_params["generator"]))
    assert any(not np.array_equal(g2[k], g_start[k]) for k in g2 if k[0].startswith("enh1"))  # the enhancer trains
    joint = train.run(_config(train__max_steps=5, **local), str(tmp_path / "local"))
    g3 = traverse_util.flatten_dict(jax.device_get(joint.state.g_params["generator"]))
    assert any(not np.array_equal(g3[("global_trunk",) + k], g1[k]) for k in trunk)
    with pytest.raises(ValueError, match="shares no generator array"):
        train.run(_config(train__max_steps=1, **{**local, "model__ngf": 4}), str(tmp_path / "bad"))


def test_official_lr_schedule_at_epoch_boundaries():
    kw = dict(lr=2e-4, niter=2, niter_decay=4, steps_per_epoch=10)
    lrs = {e: float(official_lr(np.int32((e - 1) * 10), **kw)) for e in range(1, 7)}
    # epochs 1..niter+1 at lr0, then lr0 * (1 - (e - niter - 1) / niter_decay); last epoch lr0/niter_decay.
    assert lrs == pytest.approx({1: 2e-4, 2: 2e-4, 3: 2e-4, 4: 1.5e-4, 5: 1e-4, 6: 0.5e-4})
    assert float(official_lr(np.int32(39), **kw)) == pytest.approx(1.5e-4)  # constant within an epoch


def test_trains_from_official_folder_layout(tmp_path):
    from pix2pixhd_jax.data.make_synthetic import write_dataset

    write_dataset(str(tmp_path / "data"), 4, width=64, height=32, seed=3)
    out = train.run(_config(data__source="folder", data__dataroot=str(tmp_path / "data"), train__max_steps=1),
                    str(tmp_path / "w"))
    assert out.step == 1 and np.isfinite(out.holdout_l1[-1][1])
    # A label id the config cannot hold is refused with the value and the file, before the workdir is made.
    with pytest.raises(ValueError, match=r"label \d+ in .*train_label.* >= label_nc=20"):
        train.run(_config(data__source="folder", data__dataroot=str(tmp_path / "data"), model__label_nc=20,
                          train__max_steps=1), str(tmp_path / "w2"))
    assert not (tmp_path / "w2").exists()
