"""`facext bench train` trains each asked model's tiny config in a process of its own and
reports what it measured there: steps, samples/s, peak RSS, and the loss going down;
without a GPU it says the small config was not run."""

from __future__ import annotations

import json

import pytest

from build_tools.cli import main

pytestmark = pytest.mark.slow


def test_bench_train_reports_the_tiny_run(tmp_path, monkeypatch):
    import torch

    from pipelines.fifa_annotate import run

    run(["--output", str(tmp_path / "fifa"), "--limit", "4"])
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "train", "--run", str(tmp_path / "fifa"), "--steps", "12", "-o", "b.json",
                 "--model", "fifa_mllm,corit"]) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    tiny = report["tiny"]
    assert report["models"]["fifa_mllm"]["tiny"] == tiny and tiny["model"] == "fifa_mllm"
    assert tiny["steps"] == 12 and tiny["samples_per_s"] > 0 and tiny["last_loss"] < tiny["first_loss"]
    assert 200 < tiny["peak_rss_mb"] < 4000  # torch and transformers alone take ~350 MB
    corit = report["models"]["corit"]["tiny"]
    assert corit["steps"] == 12 and corit["samples_per_s"] > 0 and 0 < corit["step_s"] < 60
    if not torch.cuda.is_available():
        assert report["small"].startswith("no GPU") and report["models"]["corit"]["small"].startswith("no GPU")
