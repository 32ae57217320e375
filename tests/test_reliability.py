"""Faults a user meets: NaN states, bad config values, corrupt or read-only checkpoints, odd files.

Most tests work on small pytrees and files without a model; one real (tiny) run shows that a run
going NaN stops before any non-finite checkpoint is written.
"""
import os
import subprocess
import time

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import fault_helpers as faults
from pix2pixhd_jax.configs import tiny_test
from pix2pixhd_jax import checkpointing, run_config, train
from pix2pixhd_jax.export import ExportedGenerator

CPU0 = jax.sharding.SingleDeviceSharding(jax.devices()[0])


def _state(value=1.0):
    return {"step": np.int32(0), "w": np.full((3, 4), value, np.float32), "b": np.zeros((4,), np.float32)}


def _abstract():
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=CPU0),
                                  _state())


def _data_iter():
    return iter(grain.MapDataset.range(10).to_iter_dataset())


def _manager(workdir, keep=3):
    return checkpointing.make_manager(str(workdir), max_to_keep=keep, async_save=False)


def _saved_steps(workdir):
    return sorted(int(p) for p in os.listdir(os.path.join(workdir, "checkpoints")) if p.isdigit())


# ------------------------------------------------------------------------------------------ item 1: NaN
def test_a_non_finite_state_is_never_saved_and_rotation_keeps_the_finite_ones(tmp_path):
    config = tiny_test.get_config()
    manager = _manager(tmp_path, keep=2)
    for step in (1, 2):
        checkpointing.save(manager, step, _state(float(step)), config)
    bad = _state()
    bad["w"][1, 2] = np.nan
    with pytest.raises(FloatingPointError, match=r"refusing to save step 3: 1 arrays .*\(w\).* newest checkpoint, "
                                                 r"step 2 .* is finite"):
        checkpointing.save(manager, 3, bad, config)
    bad["w"][1, 2] = np.inf
    with pytest.raises(FloatingPointError, match="step 4"):
        checkpointing.save(manager, 4, bad, config)
    manager.close()
    assert _saved_steps(tmp_path) == [1, 2]  # rotation never ran for the refused saves


def test_a_run_going_nan_stops_before_writing_a_non_finite_checkpoint(tmp_path):
    """The issue's reproduction (a save every step, 2 kept, NaN checked only at log steps) with lr_D=1e30."""
    config = tiny_test.get_config()
    config.optim.lr_D = 1e30  # D's params reach 1e30 after one step; the next step overflows to inf/NaN
    t = config.train
    t.max_steps, t.checkpoint_every, t.keep_checkpoints, t.log_every = 10, 1, 2, 5
    workdir = str(tmp_path / "w")
    with pytest.raises(FloatingPointError, match=r"refusing to save step (\d+).*newest checkpoint, step \d+ in"):
        train.run(config, workdir)
    steps = _saved_steps(workdir)
    assert steps, "the finite checkpoints before the NaN were rotated away"
    manager = _manager(workdir)
    for step in steps:
        state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
        leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]
        assert all(np.isfinite(x).all() for x in leaves if np.issubdtype(x.dtype, np.floating)), step
    manager.close()


# ------------------------------------------------------------------------------------------ items 2, 3: config
@pytest.mark.parametrize("key,value", [
    ("train.checkpoint_every", 0), ("train.log_every", 0), ("train.sample_every", 0), ("train.keep_checkpoints", 0),
    ("model.ngf", 0), ("model.ngf", -4), ("data.batch_size", 0), ("num_devices", -1), ("train.max_steps", -1),
    ("optim.lr_G", -1e-4), ("optim.lr_D", 0.0), ("model.n_blocks_global", -1), ("optim.beta1_G", 1.0),
    ("optim.beta2_D", 1.0), ("data.fineSize", 0), ("data.resize_or_crop", "scale"), ("data.source", "folders"),
    ("loss.lambda_feat", -1.0), ("augment.policy", "colour"), ("eval.batch_size", 0), ("features.n_clusters", 0),
    ("model.upsample_impl", "nearest"), ("data.worker_count", -1), ("loss.lambda_l1", -1.0),
    ("loss.lambda_lattice", -1.0), ("loss.lattice_reference", "fake"), ("loss.lattice_margin", 0.9),
    ("loss.lattice_sides", "below"),
    ("loss.lambda_region_colour", 1.0), ("loss.lambda_feature_colour", 1.0),  # tiny_test has no features
])
def test_config_values_that_cannot_work_are_refused_by_name(key, value):
    config = tiny_test.get_config()
    *sections, name = key.split(".")
    (config[sections[0]] if sections else config)[name] = value
    with pytest.raises(run_config.ConfigError, match=f"^{key.replace('.', '[.]')}={value!r}".replace("(", r"\(")):
        run_config.validate(config)


def test_more_devices_than_exist_is_refused_before_anything_is_written(tmp_path):
    config = tiny_test.get_config()
    config.num_devices = jax.device_count() + 1
    with pytest.raises(run_config.ConfigError, match=rf"num_devices={jax.device_count() + 1}: only"):
        train.run(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_resume_policy_compares_computation_keys_not_schedule_or_paths():
    saved = tiny_test.get_config()
    given = tiny_test.get_config()
    given.model.norm, given.loss.gan_mode = "none", "hinge"
    given.model.conv_impl, given.optim.lr_G, given.train.max_steps, given.data.dataroot = "lax", 1e-3, 99, "/x"
    given.data.fineSize = 64  # unused by resize_or_crop='none'
    assert run_config.resume_conflicts(saved, given) == [("model.norm", "instance", "none"),
                                                         ("loss.gan_mode", "lsgan", "hinge")]
    given = tiny_test.get_config()
    given.data.synthetic_width = 128  # the training image size of synthetic data
    assert [k for k, _, _ in run_config.resume_conflicts(saved, given)] == ["data.synthetic_width"]


# ------------------------------------------------------------------------------------------ item 9: corrupt steps
@pytest.mark.parametrize("corrupt", [faults.truncate_array_data, faults.garble_manifest,
                                     faults.delete_metadata, faults.garbage_iterator_json, faults.empty_step])
def test_a_corrupt_newest_step_names_it_and_the_intact_step_to_resume_from(tmp_path, corrupt):
    config = tiny_test.get_config()
    manager = _manager(tmp_path)
    it = _data_iter()
    for step in (1, 2):
        next(it)
        checkpointing.save(manager, step, _state(float(step)), config, it)
    manager.close()
    step_dir = str(tmp_path / "checkpoints" / "2")
    corrupt(step_dir)
    manager = _manager(tmp_path)
    assert manager.latest_step() == 2
    with pytest.raises(checkpointing.CheckpointError) as error:
        checkpointing.restore(manager, _abstract(), _data_iter())
    message = str(error.value)
    assert f"checkpoint step 2 at {step_dir} cannot be used" in message
    assert "resume from step 1" in message and f"mv {step_dir} {tmp_path}/broken_step_2" in message
    # The command works: with the broken step moved aside, step 1 restores.
    subprocess.run(["mv", step_dir, str(tmp_path / "broken_step_2")], check=True)
    manager.close()
    manager = _manager(tmp_path)
    state, step = checkpointing.restore(manager, _abstract(), _data_iter())
    assert step == 1 and float(state["w"][0, 0]) == 1.0
    manager.close()


def test_a_non_finite_checkpoint_from_an_older_version_is_refused_on_restore(tmp_path):
    manager = _manager(tmp_path)
    bad = _state()
    bad["b"][0] = np.nan  # written around the check, as versions before it did
    manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(bad),
                                            config=ocp.args.JsonSave(tiny_test.get_config().to_dict())))
    with pytest.raises(checkpointing.CheckpointError, match=r"step 1 .* 1 arrays hold NaN or inf \(b\)"):
        checkpointing.restore(manager, _abstract())
    manager.close()


# ------------------------------------------------------------------------------------------ item 10: read-only
def test_a_read_only_checkpoint_folder_fails_at_once(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    with faults.read_only(str(checkpoints)):
        t0 = time.time()
        with pytest.raises(checkpointing.CheckpointError, match=rf"cannot write checkpoints to {checkpoints}: .* "
                                                                "not writable"):
            checkpointing.check_writable(str(tmp_path))
        assert time.time() - t0 < 60  # a probe, not Orbax's minutes of retries
    checkpointing.check_writable(str(tmp_path))
    checkpointing.check_writable(str(tmp_path / "new" / "run"))  # created later: its parent is probed


# ------------------------------------------------------------------------------------------ minor: odd files
def test_odd_weight_files_are_refused_naming_the_file(tmp_path):
    torch = pytest.importorskip("torch")
    from pix2pixhd_jax.compat.official import load_pth

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01not a checkpoint" * 10)
    with pytest.raises(ValueError, match=rf"cannot read {garbage} as a torch state dict"):
        load_pth(str(garbage))
    as_list = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], str(as_list))
    with pytest.raises(ValueError, match=rf"{as_list} holds a list, not a state dict"):
        load_pth(str(as_list))
    nested = tmp_path / "nested.pth"
    torch.save({"model": {"a": torch.zeros(2)}}, str(nested))
    with pytest.raises(ValueError, match=rf"{nested} is not a state dict of tensors: entries \['model'\]"):
        load_pth(str(nested))
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"module.a": torch.ones(2)}, "epoch": 3}, str(wrapped))
    assert list(load_pth(str(wrapped))) == ["a"]  # the weights inside a training checkpoint's wrapper
    npz = tmp_path / "garbage.npz"
    npz.write_bytes(b"PK\x03\x04broken")
    with pytest.raises(ValueError, match=rf"cannot read {npz} as an .npz"):
        load_pth(str(npz))


def test_an_odd_export_folder_is_refused_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a complete export"):
        ExportedGenerator(str(tmp_path))
    for name in ("generator.jaxexport", "params.npz", "signature.json"):
        (tmp_path / name).write_bytes(b"garbage")
    with pytest.raises(ValueError, match=rf"cannot read {tmp_path}/generator.jaxexport as a jax.export artifact"):
        ExportedGenerator(str(tmp_path))
