"""`facext publish` on a FaceInstruct run: one config per task plus `default` and `rejected`,
each loading with `datasets` with the run's counts and an `Image` feature; the card speaks
of FaceInstruct's items and sources; the upload to the local Hub server gives the same
files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from build_tools.publish.command import publish
from build_tools.publish.export import STAGING, export_for_hub
from schemas.faceinstruct import SPLITS, TASKS
from tests.build_tools.publish.test_publish import _files, hub_client  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    from pipelines.faceinstruct.pipeline import run
    from pipelines.faceinstruct.source_trees import build_tree

    root = tmp_path_factory.mktemp("publish_sources")
    args = []
    for name in ("rafdb", "utkface", "ffpp", "disfa"):
        build_tree(name, root / name, seed=0)
        args += ["--source", f"{name}={root / name}"]
    run([*args, "--output", str(root / "out")])
    return root / "out"


def test_every_config_loads_with_the_runs_counts(output, tmp_path):
    import datasets
    from PIL import Image

    report = json.loads((output / "run_report.json").read_text())
    summary = export_for_hub(output, tmp_path / "hub", progress=False)
    assert summary["title"] == "FaceInstruct"
    default = datasets.load_dataset(str(tmp_path / "hub"))
    assert {s: default[s].num_rows for s in default} == {s: n for s, n in report["samples"]["by_split"].items() if n}
    by = report["samples"]["by_task_and_split"]
    for task in TASKS:
        if not report["samples"]["by_task"].get(task):
            assert task not in summary["configs"]
            continue
        ds = datasets.load_dataset(str(tmp_path / "hub"), task)
        assert {s: ds[s].num_rows for s in ds} == {s: by[task][s] for s in SPLITS if by[task][s]}, task
        assert set(ds[next(iter(ds))]["task"]) == {task}
        assert isinstance(ds[next(iter(ds))][0]["image"], Image.Image)
    rejected = datasets.load_dataset(str(tmp_path / "hub"), "rejected")
    assert rejected["rejected"].num_rows == report["items_rejected"]
    card = (tmp_path / "hub" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["pretty_name"] == "FaceInstruct (facext)"
    assert {c["config_name"] for c in meta["configs"]} == set(summary["configs"])
    assert f"{report['items_written']} became samples" in card and "### Per source" in card


def test_upload_to_the_local_hub(output, tmp_path, hub_client, monkeypatch):  # noqa: F811 - the fixture
    from huggingface_hub import snapshot_download

    from build_tools.fakes.hub_server import LocalHubServer

    with LocalHubServer(tokens={"hf_publish_test": "write"}) as server:
        monkeypatch.setenv("HF_TOKEN", "hf_publish_test")
        try:
            done = publish(output, repo_id="someone/faceinstruct", endpoint=server.url, progress=False)
            assert done["uploaded"]
            snapshot = Path(snapshot_download("someone/faceinstruct", repo_type="dataset", endpoint=server.url,
                                              token="hf_publish_test", local_dir=tmp_path / "snapshot"))
            assert {k: v for k, v in _files(snapshot).items() if not k.startswith(".")} == _files(output / STAGING)
            assert server.commits("someone/faceinstruct")[-1].title.endswith("FaceInstruct samples")
        finally:
            shutil.rmtree(output / STAGING, ignore_errors=True)
