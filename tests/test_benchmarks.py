"""Benchmark smoke runs (not timing tests): the train suite, the editor latency; result tables; the evaluation
entry the trainer/CLI use. (The benchmarks against the official PyTorch code: test_benchmarks_official.py.)"""
import json

import numpy as np
import pytest

from benchmarks import run
from pix2pixhd_jax.evaluation import evaluate


def test_train_suite_quick_writes_json_and_table(tmp_path, capsys):
    rows = run.main(["--suite=train", "--quick", "--conv_impls=rewrite,lax", f"--out={tmp_path}"])
    assert len(rows) == 2 and not any("error" in r for r in rows), rows
    assert [r["conv_impl"] for r in rows] == ["rewrite", "lax"]
    for row in rows:
        assert row["step_s"] > 0 and row["compile_s"] > 0 and row["flops"] > 0 and row["peak_rss_bytes"] > 0
        assert 0 < row["mfu"] < 1.5 and "mfu_datasheet" not in row  # no datasheet peak for CPUs
    # The forms compute the same function: same FLOP count up to the rewrites' reshapes.
    assert rows[0]["flops"] == pytest.approx(rows[1]["flops"], rel=0.25)
    saved = json.loads((tmp_path / "train_quick.json").read_text())
    assert saved[0]["config"] == "bench_quick"
    table = (tmp_path / "train_quick.md").read_text()
    assert "| bench_quick | 64x32 |" in table and "| False | lax |" in table and "MFU" in capsys.readouterr().out


def test_datasheet_peaks_by_device_kind():
    from benchmarks import harness

    assert harness.datasheet_peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert harness.datasheet_peak_flops("NVIDIA H100 PCIe", "bfloat16") == 756e12
    assert harness.datasheet_peak_flops("NVIDIA H200", "float32") == 495e12
    assert harness.datasheet_peak_flops("cpu", "float32") is None
    row = {"config": "bench_x", "size": "8x8", "netG": "global", "num_D": 2, "dtype": "bfloat16", "remat": False,
           "conv_impl": "auto", "compile_s": 1.0, "step_s": 0.5, "images_per_s": 2.0, "flops": 4e12, "mfu": 0.4,
           "mfu_datasheet": 0.25}
    assert "| 40.0% | 25.0% |" in run.markdown_table([row])


def test_markdown_table_reports_a_failed_variant():
    table = run.markdown_table([{"config": "bench_x", "dtype": "bfloat16", "remat": True, "error": ["OOM"]}])
    assert "error: OOM" in table


def test_evaluate_generator_scores_a_perfect_generator_zero():
    rng = np.random.default_rng(0)
    examples = [{"label": rng.integers(0, 5, (32, 48)), "inst": rng.integers(0, 5, (32, 48)),
                 "image": rng.uniform(-1, 1, (32, 48, 3)).astype(np.float32)} for _ in range(3)]
    report = evaluate.evaluate_generator(lambda b: b["image"], examples, batch_size=2)
    assert report["num_images"] == 3 and report["l1"] == 0.0
    assert report["lpips_to_real"] == pytest.approx(0.0, abs=1e-6) and "fid" not in report
    worse = evaluate.evaluate_generator(lambda b: -b["image"], examples, batch_size=2)
    assert worse["l1"] > 0.5 and worse["lpips_to_real"] > 0.05


def test_editor_latency_measures_the_window_error_and_the_warm_up_and_writes_its_table(tmp_path):
    from benchmarks import editor_latency

    # One run, one initialised workdir, one size: the full render compiles once for both measures.
    rows = editor_latency.main(["--config=tiny_test", "--rounds=0", "--select_rounds=0", "--error_sizes=256x128",
                                "--warmup_sizes=256x128", f"--out={tmp_path}"])
    assert [r["measure"] for r in rows] == ["window_error"] * 8 + ["warmup"]
    errors, warmup = rows[:-1], rows[-1]
    # Two cars x four edits, each a window smaller than the image, numbers in 0-255 levels.
    assert [r["op"] for r in errors] == [f"{op} {car}" for car in ("largest car", "median car")
                                         for op in ("move", "cluster", "relabel", "delete")]
    for row in errors:
        y0, y1, x0, x1 = row["window"]
        assert (y1 - y0) * (x1 - x0) < 256 * 128 and 0 <= row["mean_levels"] <= row["max_levels"] <= 255
    assert warmup["window_shapes"] == len(warmup["shapes"]) >= 1  # the street's cars get windows
    assert json.loads((tmp_path / "editor_latency.json").read_text()) == rows
    table = (tmp_path / "editor_latency.md").read_text()
    assert "| window_error move largest car | 256x128 |" in table and "| warmup | 256x128 | first full render" in table


def test_colour_picker_renders_each_colour_on_a_held_out_car_and_writes_its_table(tmp_path):
    import feature_helpers as fh
    from benchmarks import colour_picker

    workdir = fh.make_workdir(str(tmp_path / "run"), fh.colour_config())
    rows = colour_picker.main([f"--workdir={workdir}", "--cars=1", f"--out={tmp_path}"])
    assert [r["colour"] for r in rows] == list(colour_picker.COLOURS)
    for row in rows:
        assert len(row["per_car"]) == 1 and len(row["rendered_mean"]) == 3
        assert all(0 <= v <= 255 for v in row["rendered_mean"])
        expected = np.abs(np.asarray(row["per_car"][0]) - row["wanted"])
        np.testing.assert_allclose(row["mean_abs_error_per_channel"], expected, atol=0.06)  # rounded to 0.1
    assert rows[0]["per_car"] != rows[1]["per_car"]  # the asked colour reaches G, even untrained
    assert all(r["corrections"] == 1 for r in rows)  # set_colour's correction, as the editor makes it
    as_asked = colour_picker.measure(workdir, 1, {"red": colour_picker.COLOURS["red"]}, corrections=0)
    assert as_asked[0]["corrections"] == 0 and as_asked[0]["per_car"] != rows[0]["per_car"]
    assert len((tmp_path / "colour_picker.json").read_text().splitlines()) >= 1
    assert "all channels <= 30" in (tmp_path / "colour_picker.md").read_text()
    plain = fh.make_workdir(str(tmp_path / "plain"))
    with pytest.raises(ValueError, match="trained without loss.lambda_feature_colour"):
        colour_picker.main([f"--workdir={plain}", "--cars=1"])
