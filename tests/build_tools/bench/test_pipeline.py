"""`facext bench pipeline` runs the pipeline and its numbers agree with each other."""

import json

import pytest

from build_tools.cli import main

pytestmark = pytest.mark.slow


def test_bench_pipeline_writes_consistent_numbers(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "pipeline", "--n", "4", "-o", str(out), "--all-cores"]) == 0
    r = json.loads(out.read_text())
    assert r["pairs_written"] == 4 and r["pairs_in"] > r["pairs_written"]  # + the bad pairs
    assert r["samples"] >= 4 * 12
    assert abs(r["pairs_per_s_per_core"] - 1000 / r["pipeline_ms_per_written_pair_core"]) < 0.01
    assert abs(r["ratio_to_floor"] - r["pipeline_ms_per_written_pair_core"] / r["floor_ms_per_pair"]) < 0.01
    assert r["floor_ms_per_pair"] < r["analysis_ms_per_pair"]
    assert r["wall_s"] > 0 and r["peak_rss_mb"] >= r["peak_rss_mb_quarter_run"] > 0
    assert "pairs/s per core" in capsys.readouterr().out
