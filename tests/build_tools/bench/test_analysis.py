"""`facext bench analysis` runs and its numbers are consistent with each other."""

import json

from build_tools.bench.pipeline import FLOOR_STAGES
from build_tools.cli import main
from pipelines.fifa.analysis import STAGES


def test_bench_analysis_writes_consistent_numbers(tmp_path, capsys):
    out = tmp_path / "bench.json"
    # --all-cores: pinning the test process to one core would slow the rest of the suite.
    assert main(["bench", "analysis", "--n", "3", "-o", str(out), "--all-cores"]) == 0
    report = json.loads(out.read_text())
    assert report["pairs"] == 3 and report["statuses"] == {"ok": 3, "rejected": 0}
    assert set(report["stage_ms"]) == set(STAGES)
    assert all(v > 0 for v in report["stage_ms"].values())
    floor = sum(report["stage_ms"][s] for s in FLOOR_STAGES)
    assert abs(report["floor_ms_per_pair"] - floor) < 0.01
    stages = sum(report["stage_ms"].values())
    # The whole includes every stage plus the glue between them.
    assert report["total_ms_per_pair"] >= stages * 0.999
    assert abs(report["ratio_to_floor"] - report["total_ms_per_pair"] / floor) < 0.01
    assert abs(report["pairs_per_s_per_core"] - 1000 / report["total_ms_per_pair"]) < 0.01
    assert "whole / floor" in capsys.readouterr().out
