"""`facext bench llm`: the measurement itself (numbers are for the benchmark, not asserted)."""

from __future__ import annotations

import json

from build_tools.bench.llm import Scenario, max_in_window, run_scenario


def test_window_count_is_the_most_arrivals_in_any_half_open_window():
    starts = [0.0, 0.5, 1.0, 1.2, 1.9, 3.0, 60.0, 60.1]
    assert max_in_window(starts, 1.0) == 3  # 1.0, 1.2, 1.9
    assert max_in_window(starts, 60.0) == 7  # 0.5 .. 60.1 (60.0 - 0.0 is a full window: not both)
    assert max_in_window([], 60.0) == 0


def test_scenario_reports_what_the_server_saw():
    result = run_scenario(Scenario(latency_s=0.05, concurrency=3, rpm=1200, calls=12))
    assert result["calls"] == result["answers"] == 12  # every request reached the server once
    assert 1 <= result["max_in_flight"] <= 3
    assert result["expected_calls_per_s"] == 20.0  # min(1200/60, 3/0.05)
    assert result["max_calls_in_any_60s"] == 12 and not result["rpm_exceeded"]
    assert result["limiter_gap_s"] == 0.05 and result["achieved_calls_per_s"] > 0


def test_cli_writes_json(tmp_path, monkeypatch):
    import build_tools.bench.llm as bench_llm
    from build_tools.cli import main

    monkeypatch.setattr(bench_llm, "SCENARIOS", ((0.02, 2, None, 6),))
    out = tmp_path / "bench.json"
    assert main(["bench", "llm", "-o", str(out), "--pipeline-pairs", "0"]) == 0
    report = json.loads(out.read_text())
    assert report["target"] == "llm" and len(report["scenarios"]) == 1
    assert report["scenarios"][0]["calls"] == 6 and "machine" in report
