"""`facext validate` on FaceInstruct outputs: a run is valid, and each planted fault (a label
of the wrong shape, a video whose landmarks miss frames, a report that does not add up)
is found."""

from __future__ import annotations

import json
import shutil

import pytest

from build_tools.cli import main
from build_tools.validate_faceinstruct import validate_faceinstruct as validate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_output(tmp_path_factory):
    from pipelines.faceinstruct.pipeline import run
    from pipelines.faceinstruct.source_trees import build_tree

    root = tmp_path_factory.mktemp("validate_sources")
    args = []
    for name in ("utkface", "dfew", "disfa"):
        build_tree(name, root / name, seed=0)
        args += ["--source", f"{name}={root / name}"]
    run([*args, "--output", str(root / "out")])
    return root / "out"


def test_a_run_is_valid(run_output, capsys):
    assert main(["validate", str(run_output)]) == 0
    printed = capsys.readouterr().out
    assert "valid" in printed and "tasks: expression" in printed and "au " in printed


def _rewrite(source, target, change):
    """A copy of the output whose train split went through `change(row) -> row`."""
    import datasets

    shutil.copytree(source, target)
    train = datasets.load_from_disk(str(source / "train"))
    changed = train.map(change, features=train.features)
    shutil.rmtree(target / "train")
    changed.save_to_disk(str(target / "train"))


def test_a_wrong_label_is_found(run_output, tmp_path):
    def bad(row):
        return {**row, "label": json.dumps({"age": "old"})} if row["task"] == "age" else row

    _rewrite(run_output, tmp_path / "out", bad)
    problems = validate(tmp_path / "out").problems
    assert any("age is not a whole number" in p for p in problems), problems


def test_landmarks_missing_frames_are_found(run_output, tmp_path):
    def bad(row):
        return {**row, "landmarks": row["landmarks"][:-1]} if row["media_type"] == "video" else row

    _rewrite(run_output, tmp_path / "out", bad)
    problems = validate(tmp_path / "out").problems
    assert any("landmark frames for" in p for p in problems), problems


def test_a_report_that_does_not_add_up_is_found(run_output, tmp_path):
    shutil.copytree(run_output, tmp_path / "out")
    path = tmp_path / "out" / "run_report.json"
    report = json.loads(path.read_text())
    report["items_written"] += 1
    path.write_text(json.dumps(report))
    problems = validate(tmp_path / "out").problems
    assert any("inputs" in p for p in problems) and any("rows in the shards" in p for p in problems)
