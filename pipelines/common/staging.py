"""A finished dataset is never lost: runs write into a staging folder and replace the
previous dataset only once the new one is complete.

    OUTPUT.staging/      the run writes here (its _tmp/ included)
    OUTPUT.previous/     the replaced dataset, while a commit is under way

`commit` moves the entries a run owns (`OWNED`) out of OUTPUT into OUTPUT.previous, then
the staged entries into OUTPUT, `run_report.json` last, and then drops OUTPUT.previous.
Other files in OUTPUT are never touched.  `run_report.json` is the marker of a complete
dataset: it leaves first and arrives last, so at every moment OUTPUT either holds a
complete dataset with its report, or no report and OUTPUT.previous holds the complete
old one.  `recover` (run before every run and before a commit) finishes or undoes an
interrupted commit by that rule.

On a local disk each move is a rename, atomic by itself; the window in which OUTPUT has
no report lasts a few renames.  On Beam filesystems without renames (gs://, s3://: a
"rename" there is a copy and a delete per file) the same protocol holds, but the window
lasts as long as copying the staged files; a reader that finds OUTPUT without
`run_report.json` should read OUTPUT.previous, and the next run restores it.
"""

from __future__ import annotations

import json
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipelines.common.shards import files_under, join, remove_tree, tree_exists

REPORT = "run_report.json"
# What a run owns in its output folder; `_publish` is `facext publish`'s staging, made
# from the dataset it replaces and stale after a new run.  `llm_batch/` (batch jobs that
# cost money) is not owned: it stays in OUTPUT across runs.
OWNED = ("train", "test", "rejected", "dataset_dict.json", "_publish", "_tmp", REPORT)
STAGING_SUFFIX = ".staging"
PREVIOUS_SUFFIX = ".previous"


def staging_path(output: str) -> str:
    return output.rstrip("/") + STAGING_SUFFIX


def previous_path(output: str) -> str:
    return output.rstrip("/") + PREVIOUS_SUFFIX


def _exists(path: str) -> bool:
    return tree_exists(path)


def _entries(folder: str) -> list[str]:
    """Names directly inside a folder (local or remote)."""
    if "://" not in folder:
        import os

        return sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    prefix = folder.rstrip("/") + "/"
    names = {path[len(prefix):].split("/", 1)[0] for path in files_under(folder) if path.startswith(prefix)}
    return sorted(n for n in names if n)


def _move(src: str, dst: str) -> None:
    """One entry (file or folder) to a new name: a rename on a local disk, a copy and a
    delete per file elsewhere."""
    if "://" not in src:
        import os

        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        os.replace(src, dst)
        return
    files, base = files_under(src), src.rstrip("/")
    if FileSystems.exists(src):  # a single object
        files.append(src)
    FileSystems.rename(files, [dst.rstrip("/") + f[len(base):] for f in files])


def read_report(output: str) -> dict[str, Any] | None:
    path = join(output, REPORT)
    if not _exists(path):
        return None
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def recover(output: str) -> str | None:
    """Finish or undo a commit that was interrupted; returns what was done, for a log line.

    With OUTPUT.previous present: if OUTPUT has its report, the new dataset arrived
    whole and the old one goes; otherwise the old dataset comes back (any part of the new
    one that had arrived is dropped; the run that made it can run again).
    """
    previous = previous_path(output)
    if not _exists(previous):
        return None
    if _exists(join(output, REPORT)):
        remove_tree(previous)
        return "finished an interrupted commit"
    for name in OWNED:
        if name != REPORT and _exists(join(output, name)) and _exists(join(previous, name)):
            remove_tree(join(output, name))
    for name in sorted(_entries(previous), key=lambda n: n == REPORT):  # the report last
        if not _exists(join(output, name)):
            _move(join(previous, name), join(output, name))
    remove_tree(previous)
    return f"restored the dataset an interrupted commit had moved to {previous}"


def commit(staging: str, output: str) -> None:
    """Replace OUTPUT's owned entries by the staged ones (the report leaves first and
    arrives last), then drop the old ones and the staging folder."""
    recover(output)
    if not _exists(output):
        FileSystems.mkdirs(output)
    previous = previous_path(output)
    present = [name for name in OWNED if _exists(join(output, name))]
    if present:
        FileSystems.mkdirs(previous)
        for name in sorted(present, key=lambda n: n != REPORT):  # the report first
            _move(join(output, name), join(previous, name))
    for name in sorted(_entries(staging), key=lambda n: n == REPORT):  # the report last
        _move(join(staging, name), join(output, name))
    remove_tree(previous)
    remove_tree(staging)


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What makes two runs different runs: their inputs and the options that shape or
    place the rows, as `--name: old -> new` lines (empty when it is the same run).  `old`
    is a run report; `new` holds the new run's `run_identity` and its `input` pattern."""
    out = []
    old_id, new_id = old.get("run_identity"), new.get("run_identity") or {}
    if old_id is None:  # a report of an older facext: its options are what can be compared
        old_id = {"options": old.get("options") or {}}
        new_id = {"options": {k: v for k, v in (new_id.get("options") or {}).items() if k in old_id["options"]}}
    for key in sorted(set(old_id) | set(new_id)):
        a, b = old_id.get(key), new_id.get(key)
        if a == b:
            continue
        if key == "inputs":
            was, now = old.get("input"), new.get("input")
            out.append(f"--input: {was} -> {now}" if was != now else
                       f"--input {now}: the manifests' contents changed since the dataset was built")
        elif key == "limit":
            out.append(f"--limit: {_shown(a, 'every row')} -> {_shown(b, 'every row')}")
        elif isinstance(a, dict) and isinstance(b, dict):
            out += [f"--{k}: {_shown(a.get(k))} -> {_shown(b.get(k))}"
                    for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(f"{key}: {_shown(a)} -> {_shown(b)}")
    return out


def _shown(value: Any, unset: str = "not set") -> str:
    """An option's value as a command line spells it."""
    if value is None:
        return unset
    if isinstance(value, bool):
        return "on" if value else "off"
    return value if isinstance(value, str) and value else json.dumps(value)


def grows_a_trial(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether the new run only takes more rows of the same inputs with the same options
    than a finished `--limit` run (a trial), so that replacing it loses nothing."""
    old_id, new_id = old.get("run_identity"), new.get("run_identity") or {}
    if not old_id or old_id.get("limit") is None:
        return False
    same = all(old_id.get(k) == new_id.get(k) for k in set(old_id) | set(new_id) if k != "limit")
    return same and (new_id.get("limit") is None or new_id["limit"] > old_id["limit"])
