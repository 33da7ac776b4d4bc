"""With no --input the pipeline generates the bundled sample into the cache and runs on it."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_default_run_writes_all_eleven_tasks(tmp_path, monkeypatch):
    import datasets
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from build_tools.validate import validate
    from pipelines.fifa.bundled_sample import SAMPLE_PAIRS, sample_manifest
    from pipelines.fifa_annotate import run
    from schemas.fifa import TASKS

    monkeypatch.setenv("FACEXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    done = run([], runner=FnApiRunner())  # no options at all
    out = tmp_path / "out" / "fifa_instruct"
    ds = datasets.load_from_disk(str(out))
    tasks = {s["task"] for split in ds for row in ds[split]["samples"] for s in row}
    assert tasks == set(TASKS)
    report = json.loads((out / "run_report.json").read_text())
    assert report["pairs_written"] == SAMPLE_PAIRS and report["adds_up"]
    assert validate(out).ok
    # The offline describer names only what it measured: no hallucinated concept at all.
    hallucination = report["hallucination"]
    assert hallucination["texts"] > 0 and hallucination["mentions"] > 0
    assert hallucination["texts_hallucinating"] == 0 and hallucination["rate"] == 0.0
    assert report["ratings"]["pairs_rated"] == SAMPLE_PAIRS and report["ratings"]["mean"]["overall"] >= 9
    assert report["llm"]["calls"] == 0 and report["llm"]["cost_usd"] == 0.0
    # Its pairs are of 3 subjects, all in train: the summary says why test is empty.
    assert report["samples"]["by_split"].get("test", 0) == 0
    assert "test 0 (the split keeps each subject whole and puts about 0.1 of the subjects in test: " \
           "these inputs have too few)" in done.summary()
    # The sample is made once: a second lookup finds it complete and does not rewrite it.
    manifest = sample_manifest()
    stamp = manifest.stat().st_mtime_ns
    assert sample_manifest() == manifest and manifest.stat().st_mtime_ns == stamp


def test_dry_run_and_estimate_on_the_bundled_sample(tmp_path, monkeypatch, capsys):
    """Prompts rendered and a run priced without a key, a server, or a call."""
    from build_tools.cli import main
    from pipelines.fifa_annotate import run

    monkeypatch.setenv("FACEXT_CACHE", str(tmp_path / "cache"))
    for variable in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    run(["--describer", "gemini", "--rater", "openai", "--dry_run", "--output", "dry"])
    index = json.loads((tmp_path / "dry" / "dry_run" / "index.json").read_text())
    assert len(index) == 2 and all(p["calls"] > 0 for p in index)
    assert not (tmp_path / "dry" / "train").exists()
    capsys.readouterr()
    assert main(["estimate", "--describer", "gemini", "--rater", "openai", "--sample", "2", "--json"]) == 0
    estimate = json.loads(capsys.readouterr().out)
    assert estimate["rows"] == 22 and set(estimate["models"]) == {"gemini/gemini-2.5-flash", "openai/gpt-4o-mini"}
    assert estimate["calls"] > estimate["expected_pairs"] > 0 and estimate["cost_usd"] > 0
