"""`facext bench pipeline` and `facext bench memory` run the pipeline and their numbers
agree with each other (the figures themselves are the benchmark's, not asserted)."""

import json

import pytest

from build_tools.cli import main

pytestmark = pytest.mark.slow


def test_bench_pipeline_writes_consistent_numbers(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "pipeline", "--n", "4", "-o", str(out), "--all-cores", "--pipeline-pairs", "2"]) == 0
    r = json.loads(out.read_text())
    assert r["pairs_written"] == 4 and r["pairs_in"] > r["pairs_written"]  # + the bad pairs
    assert r["samples"] >= 4 * 12
    assert abs(r["pairs_per_s_per_core"] - 1000 / r["pipeline_ms_per_written_pair_core"]) < 0.01
    assert abs(r["ratio_to_floor"] - r["pipeline_ms_per_written_pair_core"] / r["floor_ms_per_pair"]) < 0.01
    assert r["floor_ms_per_pair"] < r["analysis_ms_per_pair"]
    assert r["floor_ms_per_pair"] < r["floor_with_encode_ms_per_pair"]
    assert r["wall_s"] > 0 and r["peak_rss_mb"] >= r["peak_rss_mb_quarter_run"] > 0
    # Each crop once: the shards are the crops' PNG bytes and a little more.
    b = r["bytes"]
    assert 1.0 < b["bytes_over_distinct_crops"] < 1.2 and b["bytes_per_pair"] * 4 == pytest.approx(b["shard_bytes"], abs=4)
    assert set(r["scale_out"]["runs"]) == {"1", "2"} and r["scale_out"]["runs"]["1"]["pairs_written"] == 4
    assert r["llm"]["pairs"] == 2 and r["llm"]["calls"] > 2 and 0 < r["llm"]["achieved_over_expected"] <= 1.05
    text = capsys.readouterr().out
    assert "pairs/s per core" in text and "x the PNG bytes of the distinct crops" in text
    assert "LLM stage through the pipeline" in text


def test_bench_memory_runs_each_size_in_a_fresh_process(tmp_path, capsys):
    out = tmp_path / "memory.json"
    assert main(["bench", "memory", "--n", "3", "--jpeg", "256", "--sizes", "3,7", "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["runs"]) == {"3", "7"}
    assert [r["runs"][n]["pairs_written"] for n in ("3", "7")] == [3, 7]  # shifted copies: every row analysed
    assert r["largest_over_smallest"] == pytest.approx(r["runs"]["7"]["peak_rss_mb"] / r["runs"]["3"]["peak_rss_mb"],
                                                       abs=0.001)
    assert "peak RSS" in capsys.readouterr().out
