"""A finished dataset is never lost: the commit protocol of `pipelines.common.staging`,
interrupted at every one of its steps, on a local disk and on an object store (`fxobj://`,
GCS's semantics: no folders, no rename)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.common import staging
from pipelines.common.staging import commit, differences, grows_a_trial, recover
from tests.pipelines.common import objstore


def _dataset(folder: Path, tag: str) -> None:
    """A stand-in dataset: every owned entry, each file naming the run that made it."""
    for split in ("train", "test", "rejected"):
        (folder / split).mkdir(parents=True)
        (folder / split / "data-00000-of-00001.arrow").write_text(f"{tag} {split}")
        (folder / split / "state.json").write_text(f"{tag} {split} state")
    (folder / "dataset_dict.json").write_text(f"{tag} dict")
    (folder / "run_report.json").write_text(json.dumps({"run": tag}))


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _which(folder: Path) -> str:
    """'old' or 'new' when the folder holds that whole dataset (and its foreign files)."""
    files = _files(folder)
    tags = {text.split()[0] for name, text in files.items() if name not in ("notes.txt", "llm_batch/state.json")
            and name != "run_report.json"}
    report = json.loads(files["run_report.json"])["run"]
    assert tags == {report}, f"a mixed dataset: {files}"
    assert files["notes.txt"] == "mine" and files["llm_batch/state.json"] == "jobs"
    return report


@pytest.fixture(params=["local", "object store"])
def folders(request, tmp_path):
    """(OUTPUT, OUTPUT.staging) as local folders, and the names the code is given: local
    paths, or `fxobj://` URLs of an object store kept in those same folders."""
    output, stage = tmp_path / "b" / "out", tmp_path / "b" / "out.staging"
    _dataset(output, "old")
    (output / "notes.txt").write_text("mine")  # not ours: never moved, never deleted
    (output / "llm_batch").mkdir()
    (output / "llm_batch" / "state.json").write_text("jobs")  # batch jobs stay across runs
    _dataset(stage, "new")
    if request.param == "local":
        return output, stage, str(output), str(stage)
    objstore.use_root(tmp_path)
    return output, stage, "fxobj://b/out", "fxobj://b/out.staging"


def _gone(folder: Path) -> bool:
    """No file left (an object store leaves no folders to remove, a disk may leave empty ones)."""
    return not folder.exists() or not any(p.is_file() for p in folder.rglob("*"))


def test_commit_replaces_what_the_run_owns_and_nothing_else(folders):
    output, stage, output_name, stage_name = folders
    commit(stage_name, output_name)
    assert _which(output) == "new"
    assert _gone(stage) and _gone(Path(staging.previous_path(str(output))))


@pytest.mark.parametrize("fail_at", range(1, 11))
def test_an_interrupted_commit_leaves_one_whole_dataset(folders, monkeypatch, fail_at):
    """Killed before the k-th move of the commit: OUTPUT shows the old dataset or, once the
    new report has arrived, the new one; after `recover` it is whole again."""
    output, _, output_name, stage_name = folders
    real_move, moves = staging._move, []

    def move(src, dst):
        moves.append(src)
        if len(moves) == fail_at:
            raise KeyboardInterrupt("killed")
        real_move(src, dst)

    monkeypatch.setattr(staging, "_move", move)
    with pytest.raises(KeyboardInterrupt):
        commit(stage_name, output_name)
    monkeypatch.setattr(staging, "_move", real_move)
    report = output / "run_report.json"
    mid = json.loads(report.read_text())["run"] if report.exists() else None
    recover(output_name)
    # 5 owned entries leave (report first), 5 staged ones arrive (report last): 10 moves.
    assert _which(output) == ("new" if mid == "new" else "old")
    assert _gone(Path(staging.previous_path(str(output))))


def test_differences_name_what_changed_as_a_command_line_spells_it():
    old = {"input": "a/*.jsonl",
           "run_identity": {"inputs": "a1", "limit": None, "options": {"seed": 0, "crop_size": 512, "x": None}}}
    new = {"input": "b.jsonl",
           "run_identity": {"inputs": "b2", "limit": 5, "options": {"seed": 3, "crop_size": 512, "x": True}}}
    assert differences(old, new) == ["--input: a/*.jsonl -> b.jsonl", "--limit: every row -> 5", "--seed: 0 -> 3",
                                     "--x: not set -> on"]
    assert differences(old, {**new, "input": "a/*.jsonl"})[0] == \
        "--input a/*.jsonl: the manifests' contents changed since the dataset was built"
    assert differences(old, old) == []


def test_only_more_rows_of_the_same_run_grow_a_trial():
    trial = {"run_identity": {"inputs": "a1", "limit": 5, "options": {"seed": 0}}}

    def new(limit, seed=0, inputs="a1"):
        return {"run_identity": {"inputs": inputs, "limit": limit, "options": {"seed": seed}}}

    assert grows_a_trial(trial, new(None)) and grows_a_trial(trial, new(6))
    assert not grows_a_trial(trial, new(5)) and not grows_a_trial(trial, new(4))
    assert not grows_a_trial(trial, new(None, seed=1)) and not grows_a_trial(trial, new(None, inputs="b2"))
    assert not grows_a_trial(new(None), new(None)) and not grows_a_trial({"options": {}}, new(None))


def test_a_report_of_an_older_facext_is_compared_by_its_options():
    legacy = {"options": {"seed": 0, "crop_size": 512}}  # no run_identity yet
    same = {"run_identity": {"inputs": "b2", "limit": None, "options": {"seed": 0, "crop_size": 512, "new": 1}}}
    assert differences(legacy, same) == []
    other = {"run_identity": {"inputs": "b2", "limit": None, "options": {"seed": 7, "crop_size": 512}}}
    assert differences(legacy, other) == ["--seed: 0 -> 7"]
