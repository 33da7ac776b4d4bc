"""The pipeline on an object store (`fxobj://`, GCS's semantics: no folders, no rename):
the same bytes as on a local disk, a finished dataset replaced only whole, and nothing
left behind."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.pipelines.common import objstore


def _arrow(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.arrow"))}


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from pipelines.fifa.sample_data import make_sample_pairs
    from pipelines.fifa_annotate import run

    root = tmp_path_factory.mktemp("object_store")
    manifest = make_sample_pairs(root / "pairs", n=3, seed=2)
    objstore.use_root(root / "store")
    common = ["--input", str(manifest), "--max_rows_per_shard", "20", "--test_fraction", "0.5"]
    run([*common, "--output", "fxobj://b/out", "--analysis_cache", "fxobj://b/cache"], runner=FnApiRunner())
    run([*common, "--output", str(root / "local"), "--analysis_cache", str(root / "cache")], runner=FnApiRunner())
    return root, common


def test_an_object_store_gets_the_bytes_a_disk_gets(runs):
    root, _ = runs
    store = root / "store" / "b"
    assert _arrow(store / "out") == _arrow(root / "local") and _arrow(root / "local")
    assert (store / "out" / "run_report.json").is_file()
    assert _files(store / "out.staging") == [] and _files(store / "out.previous") == []
    assert _files(store / "cache")  # the analysis cache works there too


def test_an_object_store_dataset_is_replaced_only_whole(runs, capsys):
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from pipelines.fifa_annotate import run

    root, common = runs
    objstore.use_root(root / "store")
    out = root / "store" / "b" / "out"
    before = _arrow(out)
    with pytest.raises(SystemExit) as refused:
        run([*common, "--output", "fxobj://b/out", "--seed", "5"], runner=FnApiRunner())
    assert refused.value.code == 2 and "--seed: 0 -> 5" in capsys.readouterr().err
    assert _arrow(out) == before
    done = run([*common, "--output", "fxobj://b/out", "--seed", "5", "--overwrite",
                "--analysis_cache", "fxobj://b/cache"], runner=FnApiRunner())
    assert done.report["options"]["seed"] == 5 and done.report["analysis_cache"]["misses"] == 0
    assert _arrow(out) != before and len(_arrow(out)) == len(before)  # whole files, none left over
    assert _files(out.parent / "out.staging") == [] and _files(out.parent / "out.previous") == []
