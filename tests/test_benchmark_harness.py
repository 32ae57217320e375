"""benchmarks/harness: the pieces every benchmark shares (no compiling, no timing asserted)."""
import json

import pytest

from benchmarks import harness


def test_interleave_alternates_variants_within_each_round_after_warmup():
    calls_made = []
    progress = []
    calls = {"a": lambda: calls_made.append("a"), "b": lambda: calls_made.append("b")}
    times = harness.interleave(calls, 3, warmup=2, after_round=lambda r, t: progress.append((r, len(t["b"]))))
    # Two untimed warm-up calls each, then a and b alternate: load during a round hits both.
    assert calls_made == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert set(times) == {"a", "b"} and all(len(v) == 3 and min(v) >= 0 for v in times.values())
    assert progress == [(0, 1), (1, 2), (2, 3)]


def test_medians_of_interleaved_times():
    assert harness.medians({"x": [3.0, 1.0, 2.0], ("y", 1): [4.0, 6.0]}) == {"x": 2.0, ("y", 1): 5.0}


def test_markdown_table_formats_each_row_through_its_columns():
    columns = (("name", lambda r: r["name"]), ("seconds", lambda r: f"{r['s']:.2f}"),
               ("note", lambda r: r.get("note", "-")))
    table = harness.markdown_table([{"name": "a", "s": 1.234}, {"name": "b", "s": 0.5, "note": "x"}], columns)
    assert table.splitlines() == ["| name | seconds | note |", "|---|---|---|", "| a | 1.23 | - |", "| b | 0.50 | x |"]
    assert harness.markdown_table([], columns).splitlines() == ["| name | seconds | note |", "|---|---|---|"]


def test_write_results_writes_the_rows_and_the_table(tmp_path):
    rows = [{"name": "a", "s": 1.0}]
    harness.write_results(str(tmp_path / "new"), "suite", rows, "| name |\n|---|\n| a |")
    assert json.loads((tmp_path / "new" / "suite.json").read_text()) == rows
    assert (tmp_path / "new" / "suite.md").read_text() == "| name |\n|---|\n| a |\n"


def test_load_config_by_name_or_path_with_argument():
    assert harness.load_config("bench_quick").bench.width == 64
    by_path = harness.load_config("configs/pix2pixhd_pp.py:attn")
    assert tuple(by_path.model.d_attention_scales) == (0,)
    assert harness.load_config("configs/bench_quick.py").to_dict() == harness.load_config("bench_quick").to_dict()


def test_a_training_config_is_benchmarked_at_the_size_its_data_trains_at():
    demo = harness.load_config("synthetic_demo")  # no bench section of its own
    assert (demo.bench.height, demo.bench.width, demo.bench.size_from) == (128, 256, "data.synthetic_*")
    city = harness.load_config("label2city_1024p")
    assert (city.bench.height, city.bench.width) == (city.data.loadSize // 2, city.data.loadSize)
    from benchmarks import memory

    assert memory.image_size(demo) == (128, 256, "data.synthetic_*")
    assert memory.image_size(harness.load_config("bench_quick"))[2] == "config.bench"


def test_load_config_names_the_missing_config():
    with pytest.raises(FileNotFoundError, match="no config named 'bench_nope'"):
        harness.load_config("bench_nope")
    with pytest.raises(FileNotFoundError, match="configs/nope.py"):
        harness.load_config("configs/nope.py")


def test_every_script_is_launched_one_way_and_uses_the_harness():
    import pathlib

    folder = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
    scripts = [p for p in sorted(folder.glob("*.py")) if p.stem not in ("__init__", "harness")]
    assert len(scripts) >= 10, [p.name for p in scripts]
    for path in scripts:
        text = path.read_text()
        assert "python benchmarks/" not in text, f"{path.name}: launch it as python -m benchmarks.{path.stem}"
        assert f"python -m benchmarks.{path.stem}" in text, f"{path.name}: its docstring shows no launch line"
        assert "from benchmarks import harness" in text, f"{path.name} does not use benchmarks/harness.py"
