"""The 13 dataset readers against fixture trees built by separate code
(`pipelines.faceinstruct.source_trees`, written from the layout reference by someone who
had not seen the readers): every labelled item comes out with the official class name,
the official split and the subject; every row a reader cannot use is rejected with its
reason; nothing the label files list is lost, and nothing they do not list is read."""

from __future__ import annotations

import pytest

from pipelines.faceinstruct.readers import READERS, SourceError, read_source
from pipelines.faceinstruct.readers.manifest import manifest_parser, parse_label
from pipelines.faceinstruct.source_trees import SOURCES, build_tree
from schemas.faceinstruct import FaceItem, RejectedItem

# What the readers decide; the other reasons (decode_error, no_face, ...) are the media
# stage's, so a reader hands those items on.
READ_REASONS = {"missing_file", "unknown_label"}
# The trees call every unusable class code unknown; the readers tell a known code that
# labels no class (AffectNet's 8 None, 9 Uncertain, 10 No-Face) apart from an unknown one.
SAME_REASON = {"unknown_label": {"unknown_label", "unusable_label"}}


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return {name: (root / name, build_tree(name, root / name, seed=0)) for name in SOURCES}


def key(x) -> tuple:
    return (x.source_path, x.source_frame)


def test_every_dataset_has_a_reader():
    assert tuple(READERS) == SOURCES


@pytest.mark.parametrize("name", SOURCES)
def test_reader_yields_what_the_tree_holds(trees, name):
    root, expected = trees[name]
    got = list(read_source(name, str(root)))
    items = {key(x): x for x in got if isinstance(x, FaceItem)}
    rejected = {key(x): x for x in got if isinstance(x, RejectedItem)}
    assert len(items) + len(rejected) == len(got), "one output per media (and frame)"
    want_items = {key(e): e for e in expected if e.reject not in READ_REASONS}
    want_rejected = {key(e): e for e in expected if e.reject in READ_REASONS}
    assert sorted(items) == sorted(want_items)
    assert sorted(rejected) == sorted(want_rejected)
    for k, e in want_items.items():
        item = items[k]
        assert (item.task, item.media_type, item.split, item.subject_id) == \
            (e.task, e.media_type, e.split, e.subject_id), k
        if e.label is not None:  # a good item (the media stage rejects the others)
            assert item.label == e.label, k
    for k, e in want_rejected.items():
        assert rejected[k].reason in SAME_REASON.get(e.reject, {e.reject}), (k, rejected[k].detail)
        assert rejected[k].stage == "read" and rejected[k].detail


@pytest.mark.parametrize("name", SOURCES)
def test_reading_is_deterministic(trees, name):
    root, _ = trees[name]
    assert list(read_source(name, str(root))) == list(read_source(name, str(root)))


def test_every_bad_kind_appears_across_the_trees(trees):
    kinds = {e.reject for _, expected in trees.values() for e in expected}
    assert {"missing_file", "decode_error", "no_face", "multiple_faces", "too_many_failed_frames",
            "unknown_label"} <= kinds


def test_a_root_without_label_files_is_a_source_error(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"x")
    for name in ("dfew", "rafdb", "celeba", "disfa", "ffpp", "fakeavceleb"):
        with pytest.raises(SourceError, match="under"):
            list(read_source(name, str(tmp_path)))


def test_ffpp_names_the_compressions_it_has(trees):
    root, _ = trees["ffpp"]
    with pytest.raises(SourceError, match=r"c23|raw|c40"):
        list(read_source("ffpp", str(root), {"compression": "raw"}))


@pytest.mark.parametrize("task, value, label", [
    ("expression", "Happy", {"expression": "Happy"}),
    ("expression", '{"expression": "sadness"}', {"expression": "sadness"}),
    ("au", "12 1 6", {"aus": [1, 6, 12]}),
    ("au", [4, 4, 2], {"aus": [2, 4]}),
    ("attribute", "Smiling Male", {"attributes": ["Male", "Smiling"]}),
    ("age", "34", {"age": 34}),
    ("deepfake", "fake", {"fake": True, "method": None}),
    ("deepfake", '{"fake": true, "method": "FaceSwap"}', {"fake": True, "method": "FaceSwap"}),
    ("deepfake", "real", {"fake": False, "method": None}),
])
def test_manifest_labels(task, value, label):
    assert parse_label(task, value) == label


@pytest.mark.parametrize("task, value", [
    ("attribute", "Smiling Happy"), ("age", "34.5"), ("age", "200"), ("deepfake", "maybe"), ("au", "x"),
    ("expression", ""), ("expression", "Hapy"),
])
def test_manifest_labels_refused(task, value):
    with pytest.raises((ValueError, TypeError)):
        parse_label(task, value)


def test_manifest_rows(tmp_path):
    manifest = str(tmp_path / "m.jsonl")
    parse = manifest_parser(allow_absolute=False)
    item = parse(manifest, 0, {"media": "a/b.jpg", "task": "age", "label": "30", "subject_id": 7})
    assert isinstance(item, FaceItem) and item.label == {"age": 30} and item.subject_id == "7"
    assert item.media == str(tmp_path / "a" / "b.jpg") and item.media_type == "image"
    video = parse(manifest, 1, {"media": "v.mp4", "task": "expression", "label": "Sad", "split": "test"})
    assert video.media_type == "video" and video.split == "test"
    frame = parse(manifest, 2, {"media": "v.mp4", "task": "au", "label": "1 2", "source_frame": 5})
    assert frame.media_type == "image" and frame.source_frame == 5
    for row, reason in [({"media": "x.jpg", "task": "pose", "label": "1"}, "bad_manifest_row"),
                        ({"media": "x.jpg", "task": "age"}, "bad_manifest_row"),
                        ({"media": "../x.jpg", "task": "age", "label": "3"}, "path_outside_manifest"),
                        ({"media": "x.jpg", "task": "age", "label": "old"}, "unknown_label"),
                        ({"media": "x.jpg", "task": "age", "label": "3", "split": "val"}, "bad_manifest_row"),
                        ("not JSON", "bad_manifest_row")]:
        out = parse(manifest, 3, row)
        assert isinstance(out, RejectedItem) and out.reason == reason, (row, out)


@pytest.mark.parametrize("name", SOURCES)
def test_a_wrapper_folder_changes_nothing_but_the_paths(trees, tmp_path, name):
    """Unpacking adds a folder level for some datasets (DFEW, FakeAVCeleb): readers search
    below the root instead of demanding one depth."""
    import shutil

    root, _ = trees[name]
    wrapped = tmp_path / name
    shutil.copytree(root, wrapped / "unpacked")
    plain = [(x.source_path, x.source_frame, getattr(x, "label", None), getattr(x, "reason", None))
             for x in read_source(name, str(root))]
    nested = [(x.source_path.removeprefix("unpacked/"), x.source_frame, getattr(x, "label", None),
               getattr(x, "reason", None)) for x in read_source(name, str(wrapped))]
    assert nested == plain
