"""The real train.run on a shrunken config: resume, re-sharding, staging, bad checkpoints, outputs."""
import json
import os
import sys

import jax
import numpy as np
import pytest
from flax import traverse_util

sys.path.insert(0, ".")
from configs import tiny_test  # noqa: E402
from pix2pixhd_jax import train  # noqa: E402
from pix2pixhd_jax.optim import official_lr  # noqa: E402


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


def test_resume_equals_uninterrupted_and_writes_outputs(tmp_path):
    straight = train.run(_config(train__max_steps=6), str(tmp_path / "straight"))
    train.run(_config(train__max_steps=3), str(tmp_path / "resumed"))
    resumed = train.run(_config(train__max_steps=6), str(tmp_path / "resumed"))
    assert straight["step"] == resumed["step"] == 6
    for side in ("g_params", "d_params", "g_opt_state", "d_opt_state"):
        _assert_trees_equal(getattr(straight["state"], side), getattr(resumed["state"], side), atol=1e-6)
    # Same batches after the restart: the logged losses of steps 4..6 agree.
    def losses(workdir):
        lines = [json.loads(l) for l in open(tmp_path / workdir / "metrics.jsonl")]
        return {l["step"]: l["loss_G"] for l in lines if "loss_G" in l}
    a, b = losses("straight"), losses("resumed")
    for step in (4, 5, 6):
        assert b[step] == pytest.approx(a[step], rel=1e-5)
    samples = os.listdir(tmp_path / "straight" / "samples")
    assert "index.html" in samples and "step_00000006.png" in samples
    assert _tensorboard_tags(tmp_path / "straight" / "tensorboard") >= {"loss_G", "loss_D", "holdout_L1"}


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


def test_checkpoint_from_4_devices_restores_on_8(tmp_path):
    train.run(_config(num_devices=4, data__batch_size=8, train__max_steps=1), str(tmp_path / "w"))
    out = train.run(_config(num_devices=8, data__batch_size=8, train__max_steps=2), str(tmp_path / "w"))
    assert out["step"] == 2
    assert len(jax.tree_util.tree_leaves(out["state"].g_params)[0].sharding.device_set) == 8


def test_checkpoint_of_another_config_names_the_mismatched_arrays(tmp_path):
    train.run(_config(train__max_steps=1), str(tmp_path / "w"))
    with pytest.raises(ValueError, match=r"(?s)does not match this config.*generator/front/conv/kernel: checkpoint \(7, 7, 36, 4\) vs config \(7, 7, 36, 8\)"):
        train.run(_config(model__ngf=8, train__max_steps=2), str(tmp_path / "w"))


def test_coarse_to_fine_staging(tmp_path):
    stage1 = train.run(_config(train__max_steps=2), str(tmp_path / "global"))
    g1 = traverse_util.flatten_dict(jax.device_get(stage1["state"].g_params["generator"]))
    # 8 examples / batch 2 = 4 steps per epoch; the trunk stays fixed for the first epoch.
    local = dict(model__netG="local", model__ngf=2, model__num_D=3, train__init_from=str(tmp_path / "global"),
                 optim__niter_fix_global=1, data__synthetic_width=128, data__synthetic_height=64)
    fixed = train.run(_config(train__max_steps=4, **local), str(tmp_path / "local"))
    g2 = traverse_util.flatten_dict(jax.device_get(fixed["state"].g_params["generator"]))
    trunk = {k[1:]: v for k, v in g2.items() if k[0] == "global_trunk"}
    assert set(trunk) == {k for k in g1 if k[0] != "out"}
    for k, v in trunk.items():
        np.testing.assert_array_equal(v, g1[k])  # copied from stage 1 and untouched while fixed
    d1 = traverse_util.flatten_dict(jax.device_get(stage1["state"].d_params))
    d2_init = train.transfer_from_stage1(fixed["state"], stage1["state"])[1]
    assert any(p.startswith("scale0/") for p in d2_init) and not any(p.startswith("scale2/") for p in d2_init)
    assert {k for k in d1} <= set(traverse_util.flatten_dict(jax.device_get(fixed["state"].d_params)))
    one = train.run(_config(train__max_steps=1, **local), str(tmp_path / "one_step"))
    g_one = traverse_util.flatten_dict(jax.device_get(one["state"].g_params["generator"]))
    assert all(np.array_equal(g_one[("global_trunk",) + k], v) for k, v in trunk.items())
    assert any(not np.array_equal(g2[k], g_one[k]) for k in g2 if k[0].startswith("enh1"))  # the enhancer trains
    with pytest.raises(ValueError, match="shares no generator array"):
        train.run(_config(train__max_steps=1, **{**local, "model__ngf": 4}), str(tmp_path / "bad"))
    # After the fixed epoch the whole generator trains.
    joint = train.run(_config(train__max_steps=5, **local), str(tmp_path / "local"))
    g3 = traverse_util.flatten_dict(jax.device_get(joint["state"].g_params["generator"]))
    assert any(not np.array_equal(g3[("global_trunk",) + k], g1[k]) for k in trunk)


def test_official_lr_schedule_at_epoch_boundaries():
    kw = dict(lr=2e-4, niter=2, niter_decay=4, steps_per_epoch=10)
    lrs = {e: float(official_lr(np.int32((e - 1) * 10), **kw)) for e in range(1, 7)}
    # epochs 1..niter+1 at lr0, then lr0 * (1 - (e - niter - 1) / niter_decay); last epoch lr0/niter_decay.
    assert lrs == pytest.approx({1: 2e-4, 2: 2e-4, 3: 2e-4, 4: 1.5e-4, 5: 1e-4, 6: 0.5e-4})
    assert float(official_lr(np.int32(39), **kw)) == pytest.approx(1.5e-4)  # constant within an epoch


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    """TPU preemption: the CLI catches SIGTERM, saves the current step and stops cleanly."""
    import signal
    import subprocess
    import time

    workdir = tmp_path / "w"
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "pix2pixhd_jax.main", "--config=configs/tiny_test.py",
                             f"--workdir={workdir}", "--config.train.max_steps=100000", "--config.num_devices=1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 4):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    steps = sorted(int(p) for p in os.listdir(workdir / "checkpoints") if p.isdigit())
    assert steps and 3 <= steps[-1] < 100000
    assert "SIGTERM" in out


def test_trains_from_official_folder_layout(tmp_path):
    from pix2pixhd_jax.data.make_synthetic import write_dataset

    write_dataset(str(tmp_path / "data"), 4, width=64, height=32, seed=3)
    out = train.run(_config(data__source="folder", data__dataroot=str(tmp_path / "data"), train__max_steps=1),
                    str(tmp_path / "w"))
    assert out["step"] == 1 and np.isfinite(out["holdout_L1_end"])
    # A label id the config cannot hold is refused with the value and the file.
    with pytest.raises(ValueError, match=r"label \d+ in .*train_label.* >= label_nc=20"):
        train.run(_config(data__source="folder", data__dataroot=str(tmp_path / "data"), model__label_nc=20,
                          train__max_steps=1), str(tmp_path / "w2"))
