"""With no --input the pipeline generates the bundled sample into the cache and runs on it."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_default_run_writes_all_eleven_tasks(tmp_path, monkeypatch):
    import datasets
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from build_tools.bundled_sample import SAMPLE_PAIRS, sample_manifest
    from build_tools.validate import validate
    from pipelines.fifa_annotate import run
    from schemas.fifa import TASKS

    monkeypatch.setenv("FACEXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    run([], runner=FnApiRunner())  # no options at all
    out = tmp_path / "out" / "fifa_instruct"
    ds = datasets.load_from_disk(str(out))
    tasks = {t for split in ds for t in ds[split]["task"]}
    assert tasks == set(TASKS)
    report = json.loads((out / "run_report.json").read_text())
    assert report["pairs_written"] == SAMPLE_PAIRS and report["adds_up"]
    assert validate(out).ok
    # The sample is made once: a second lookup finds it complete and does not rewrite it.
    manifest = sample_manifest()
    stamp = manifest.stat().st_mtime_ns
    assert sample_manifest() == manifest and manifest.stat().st_mtime_ns == stamp
