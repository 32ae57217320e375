"""Benchmark smoke runs (not timing tests) against the official PyTorch layers and code: the per-layer
profile (against the official units and against plain lax convs) and the side-by-side comparison.
Split from test_benchmarks.py so that the two halves run on different test workers."""
import pytest


def test_layer_profile_times_every_official_unit_against_ours(capsys):
    pytest.importorskip("torch")
    from benchmarks import layer_profile

    results = layer_profile.main(["--config=bench_quick", "--rounds=1"])
    units = [r["unit"] for r in results]
    # bench_quick: front, 2 down, residual, 2 up, output, D at 2 scales.
    assert len(units) == 9 and units[0].startswith("G front") and units[-1].startswith("D at 1/2")
    assert all(r["baseline"] == "official" and r["baseline_ms"] > 0 and r["ours_ms"] > 0 for r in results)
    assert "| G output: pad, 7x7 conv 8->3, tanh @64x32 |" in capsys.readouterr().out


def test_layer_profile_times_the_conv_rewrites_against_plain_lax(capsys):
    pytest.importorskip("torch")
    from benchmarks import layer_profile

    results = layer_profile.main(["--config=bench_quick", "--rounds=1", "--baseline=lax"])
    assert len(results) == 9 and all(r["baseline"] == "lax" and r["baseline_ms"] > 0 for r in results)
    assert "| lax ms | ours (rewrites) ms |" in capsys.readouterr().out


def test_compare_official_alone_times_each_side_in_its_own_process(capsys, monkeypatch):
    pytest.importorskip("torch")
    from train_process import env

    for name, value in env().items():  # the children share the session's compile cache and XLA setting
        if name.startswith("JAX_"):
            monkeypatch.setenv(name, value)
    from benchmarks import compare_official

    # G inference: the same process isolation at a fraction of the train step's compile (tested in the train suite).
    rows = compare_official.main(["--config=bench_quick", "--rounds=1", "--alone", "--infer"])
    assert set(rows) == {"official_pytorch", "ours_jax"}
    assert all(r["median_s"] > 0 and r["rounds"] == 1 for r in rows.values())
    # Each child's own peak: at least the interpreter plus its framework, far below this machine's memory.
    assert all(0.1 < r["peak_rss_gb"] < 8 for r in rows.values()), rows
    assert "G inference, each alone: speed-up" in capsys.readouterr().out
