"""benchmarks/quality_per_minute.py: one training run per recipe, snapshots matched to budget marks,
the table, JSON and plot written (outputs checked for form, never for timing)."""
import json
import math
import os

import pytest
from PIL import Image

from benchmarks import quality_per_minute as qpm
import conftest


def test_official_recipe_resets_every_recipe_key_to_the_paper_default():
    from pix2pixhd_jax.configs import default

    flags = qpm.recipe_overrides("official")
    assert len(flags) == len(qpm.RECIPE_KEYS)
    assert f"--config.optim.ema_decay={default.get_config().optim.ema_decay}" in flags
    assert "--config.model.upsample_layer=transpose" in flags
    assert "--config.model.noise_inputs=False" in flags and "--config.loss.lambda_lattice=0.0" in flags
    assert "--config.loss.vgg_layer_weights=(0.03125, 0.0625, 0.125, 0.25, 1.0)" in flags
    assert qpm.recipe_overrides("demo") == []
    with pytest.raises(ValueError, match="recipe 'fast' is not one of"):
        qpm.recipe_overrides("fast")


def test_official_flags_turn_the_demo_config_into_the_defaults_for_every_recipe_key():
    # The flags go through the same parser as the training command's, tuples included.
    from absl import flags
    from pix2pixhd_jax.cli import process
    from pix2pixhd_jax.configs import default

    argv = ["train", "--config=configs/synthetic_demo.py", *qpm.recipe_overrides("official")]
    fv = flags.FlagValues()
    process.define_config_flag(fv, argv)
    process.parse(fv, argv, "")
    official, reference = process.loaded_config(fv), default.get_config()
    for key in qpm.RECIPE_KEYS:
        section, name = key.split(".")
        assert official[section][name] == reference[section][name], key


def test_each_mark_takes_the_newest_checkpoint_that_existed_and_the_last_the_stop_save():
    appeared = {20: 50.0, 40: 100.0, 60: 170.0, 63: 181.0}  # step -> clock seconds when it appeared
    assert qpm.pick_snapshots(appeared, [10.0, 120.0, 180.0]) == [None, 40, 63]
    assert qpm.pick_snapshots({}, [1.0]) == [None]


@pytest.mark.slow
def test_tiny_run_writes_table_json_and_plot(tmp_path, monkeypatch):
    # The training process compiles as the test session does: tiny programs, unoptimised, cached.
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", conftest.CACHE_DIR)
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(conftest.CACHE_MIN_COMPILE_SECS))
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    extra = "--config.train.log_every=1 --config.train.sample_every=1000"
    rows = qpm.main([f"--out={tmp_path}", "--config=configs/tiny_test.py", "--recipes=demo", "--minutes=0.001,0.002",
                     "--clock=cpu", "--snapshot_every=1", "--num_eval=2", "--nolpips", f"--extra={extra}"])
    assert [(r["recipe"], r["minutes"]) for r in rows] == [("demo", 0.001), ("demo", 0.002)]
    last = rows[-1]
    assert last["step"] >= 1 and last["snapshot_clock_s"] >= 0.12  # the stop save, taken at or after the mark
    assert math.isfinite(last["l1"]) and last["lattice8_fake"] > 0 and last["lattice4_fake"] > 0
    saved = json.loads((tmp_path / "quality_per_minute.json").read_text())
    assert saved["clock"] == "cpu" and saved["minutes"] == [0.001, 0.002] and len(saved["rows"]) == 2
    assert saved["real_photos"]["lattice8_fake"] > 0 and saved["runs"]["demo"]["exit_status"] == 130
    table = (tmp_path / "quality_per_minute.md").read_text()
    assert table.startswith("Budget clock: cpu") and "| demo | 0.002 |" in table and "| real photos |" in table
    with Image.open(tmp_path / "quality_per_minute.png") as plot:
        assert plot.size == (720, 508)
    # Only the scored checkpoints stay.
    assert sorted(os.listdir(tmp_path / "demo" / "checkpoints")) == sorted({str(r["step"]) for r in rows
                                                                            if r["step"] is not None})

    # Earlier results join a later table and plot; with no recipe to run, --merge only re-draws.
    official = {**saved, "rows": [{**r, "recipe": "official", "minutes": 0.004} for r in saved["rows"]]}
    (tmp_path / "official.json").write_text(json.dumps(official))
    merged = qpm.main([f"--out={tmp_path / 'both'}", "--recipes=", "--clock=cpu",
                       f"--merge={tmp_path / 'quality_per_minute.json'},{tmp_path / 'official.json'}"])
    assert [(r["recipe"], r["minutes"]) for r in merged] == [("demo", 0.001), ("demo", 0.002), ("official", 0.004),
                                                             ("official", 0.004)]
    both = (tmp_path / "both" / "quality_per_minute.md").read_text()
    assert "| demo | 0.002 |" in both and "| official | 0.004 |" in both and "| real photos |" in both
    assert json.loads((tmp_path / "both" / "quality_per_minute.json").read_text())["minutes"] == [0.001, 0.002, 0.004]
    assert (tmp_path / "both" / "quality_per_minute.png").exists()
    with pytest.raises(ValueError, match=r"measured on the 'cpu' clock, this run uses 'wall'"):
        qpm.main([f"--out={tmp_path / 'x'}", "--recipes=", "--clock=wall", f"--merge={tmp_path / 'official.json'}"])
