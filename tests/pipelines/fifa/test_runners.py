"""The same manifest gives byte-identical shards on the FnApiRunner, the multi-process
DirectRunner and the Dask runner (a real distributed engine, two worker processes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.pipelines.fifa.test_pipeline import run_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory) -> Path:
    """Five good pairs and three bad ones, so every branch of the graph carries data."""
    from pipelines.fifa.sample_data import make_sample_pairs

    folder = tmp_path_factory.mktemp("runner_pairs")
    make_sample_pairs(folder, n=5, seed=5)
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    keep = rows[:5] + [r for r in rows if r.get("expected_reject") in ("decode_error", "no_face", "misaligned")]
    path = folder / "small.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in keep))
    return path


@pytest.fixture(scope="module")
def reference(small_manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "out"
    run_pipeline(small_manifest, out, "--max_rows_per_shard", "40")
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "run_report.json"}


def _same_output(reference: Path, other: Path) -> None:
    ref, got = _files(reference), _files(other)
    assert ref.keys() == got.keys()
    assert [k for k in ref if ref[k] != got[k]] == []
    a = json.loads((reference / "run_report.json").read_text())
    b = json.loads((other / "run_report.json").read_text())
    for key in ("inputs", "pairs_written", "pairs_rejected", "rejected", "samples", "shards"):
        assert a[key] == b[key], key
    assert a["pairs_written"] == 5 and a["pairs_rejected"] == 3 and b["adds_up"]


def test_multiprocess_direct_runner_gives_identical_shards(small_manifest, reference, tmp_path):
    from pipelines.fifa_annotate import run

    out = tmp_path / "direct"
    run(["--input", str(small_manifest), "--output", str(out), "--max_rows_per_shard", "40",
         "--runner", "DirectRunner", "--direct_num_workers", "2",
         "--direct_running_mode", "multi_processing"])
    _same_output(reference, out)


def test_dask_runner_gives_identical_shards(small_manifest, reference, tmp_path):
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    from dask.distributed import LocalCluster

    from pipelines.fifa_annotate import run

    out = tmp_path / "dask"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        run(["--input", str(small_manifest), "--output", str(out), "--max_rows_per_shard", "40",
             "--runner", "apache_beam.runners.dask.dask_runner.DaskRunner",
             "--dask_client_address", cluster.scheduler_address, "--dask_npartitions", "2"])
    _same_output(reference, out)
