"""Manifest reading: the same rows in every format, path rules, bad rows, optional fields."""

from __future__ import annotations

import csv
import gzip
import json
import os
from pathlib import Path

import pytest

from pipelines.common.manifest import count_rows, match_manifests, resolve
from pipelines.fifa.pairs import parse_row, read_manifest
from schemas.fifa import PairInput, RejectedRow

FIELDS = ("pair_id", "real", "fake", "method", "category", "subject_id", "source_dataset")
ROWS = [
    {"pair_id": "a1", "real": "pairs/0000_real.png", "fake": "pairs/0000_fake.png", "method": "faceswap",
     "category": "identity_swap", "subject_id": "alice", "source_dataset": "ff++"},
    {"pair_id": "", "real": "pairs/0001_real.png", "fake": "pairs/0001_fake.png", "method": "",
     "category": "", "subject_id": "", "source_dataset": ""},
    {"pair_id": "c3", "real": "sub/dir/r.png", "fake": "sub/dir/f.png", "method": "inpaint",
     "category": "", "subject_id": "bob", "source_dataset": ""},
]


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _csv(path: Path, rows) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _parquet(path: Path, rows) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([dict(r) for r in rows]), str(path))
    return path


def _jsonl_gz(path: Path, rows) -> Path:
    with gzip.open(path, "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _csv_gz(path: Path, rows) -> Path:
    plain = _csv(path.with_suffix(".plain"), rows)
    path.write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    return path


WRITERS = {"manifest.jsonl": _jsonl, "manifest.csv": _csv, "manifest.parquet": _parquet,
           "manifest.jsonl.gz": _jsonl_gz, "manifest.csv.gz": _csv_gz}


def _without_manifest(records):
    return [r.model_copy(update={"manifest": ""}) for r in records]


@pytest.fixture
def all_formats(tmp_path) -> dict[str, Path]:
    return {name: write(tmp_path / name, ROWS) for name, write in WRITERS.items()}


def test_formats_parse_to_identical_pairs(all_formats, tmp_path):
    parsed = {name: list(read_manifest(str(path))) for name, path in all_formats.items()}
    reference = parsed["manifest.jsonl"]
    assert len(reference) == len(ROWS)
    assert all(isinstance(r, PairInput) for r in reference)
    for name, records in parsed.items():
        assert _without_manifest(records) == _without_manifest(reference), name
        assert {r.manifest for r in records} == {name}
    first = reference[0]
    assert first.real == os.path.normpath(str(tmp_path / "pairs/0000_real.png"))
    assert [r.row for r in reference] == [0, 1, 2]


@pytest.mark.parametrize("name", ["manifest.jsonl.gz", "manifest.csv.gz"])
def test_gzipped_files_are_really_compressed(all_formats, name):
    assert all_formats[name].read_bytes()[:2] == b"\x1f\x8b"  # the parse above decompressed them


@pytest.mark.parametrize("name", list(WRITERS))
def test_count_rows_per_format(all_formats, name):
    assert count_rows(str(all_formats[name])) == len(ROWS)


def test_count_rows_skips_blank_jsonl_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n   \n" + json.dumps(ROWS[2]) + "\n")
    assert count_rows(str(path)) == 2
    assert len(list(read_manifest(str(path)))) == 2


def test_glob_matches_both_manifests_sorted(tmp_path):
    b = _jsonl(tmp_path / "b.jsonl", ROWS[:1])
    a = _jsonl(tmp_path / "a.jsonl", ROWS[1:])
    (tmp_path / "notes.txt").write_text("not a manifest")
    found = match_manifests(str(tmp_path / "*.jsonl"))
    assert found == [str(a), str(b)]


def test_pattern_matching_nothing_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest matches"):
        match_manifests(str(tmp_path / "nothing-*.jsonl"))


def test_unknown_extension_raises(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("real,fake\n")
    with pytest.raises(ValueError, match="unknown manifest format"):
        match_manifests(str(path))
    with pytest.raises(ValueError, match="unknown manifest format"):
        list(read_manifest(str(path)))


# --- path rules -------------------------------------------------------------------------------


def test_relative_paths_resolve_against_manifest_folder(tmp_path):
    manifest = str(tmp_path / "data" / "m.jsonl")
    assert resolve(manifest, "pairs/x.png", False) == str(tmp_path / "data" / "pairs" / "x.png")
    # `..` that stays inside the folder is fine
    assert resolve(manifest, "pairs/../y.png", False) == str(tmp_path / "data" / "y.png")


ESCAPING = ["../outside.png", "pairs/../../outside.png", "/etc/hostname", "gs://bucket/x.png",
            "https://example.com/x.png", "C:\\images\\x.png"]


@pytest.mark.parametrize("ref", ESCAPING)
def test_escaping_paths_are_rejected(tmp_path, ref):
    manifest = str(tmp_path / "m.jsonl")
    for field in ("real", "fake"):
        row = {"pair_id": "p", "real": "ok_real.png", "fake": "ok_fake.png", field: ref}
        out = parse_row(manifest, 4, row, allow_absolute=False)
        assert isinstance(out, RejectedRow)
        assert out.reason == "path_outside_manifest"
        assert out.stage == "manifest"
        assert (out.pair_id, out.row, out.manifest) == ("p", 4, "m.jsonl")
        assert getattr(out, field) == ref
        assert "allow_absolute_paths" in out.detail


@pytest.mark.parametrize("ref", ESCAPING)
def test_escaping_paths_allowed_with_allow_absolute(tmp_path, ref):
    manifest = str(tmp_path / "sub" / "m.jsonl")
    out = parse_row(manifest, 0, {"real": ref, "fake": "f.png"}, allow_absolute=True)
    assert isinstance(out, PairInput)
    if ref.startswith(("../", "pairs/")):
        assert out.real == os.path.normpath(os.path.join(str(tmp_path / "sub"), ref))
        assert out.real.startswith(str(tmp_path))
    else:
        assert out.real == ref  # absolute paths and URLs pass through unchanged


def test_a_rejected_pair_names_its_images_as_the_manifest_wrote_them(tmp_path):
    """The pair reads resolved paths; its rejected row keeps the manifest's own references,
    so the rejected table does not depend on where the data was copied."""
    rows = {}
    for folder in ("a", "b"):
        pair = parse_row(str(tmp_path / folder / "m.jsonl"), 0, {"real": "pairs/r.png", "fake": "f.png"}, False)
        assert pair.real == str(tmp_path / folder / "pairs" / "r.png")
        rows[folder] = pair.rejected("read", "missing_file", "real r.png does not exist")
    assert rows["a"] == rows["b"]
    assert (rows["a"].real, rows["a"].fake, rows["a"].manifest) == ("pairs/r.png", "f.png", "m.jsonl")


@pytest.mark.parametrize("row, detail", [
    ({"fake": "f.png"}, "missing real (the row has columns: fake)"),
    ({"real": "r.png"}, "missing fake (the row has columns: real)"),
    ({"real": "", "fake": "f.png"}, "missing real (the row has columns: fake)"),
    ({"method": "x"}, "missing real and fake (the row has columns: method)"),
    ({}, "missing real and fake (the row has columns: none)"),
    ({"real": 3, "fake": "f.png"}, "real is not a path: 3"),
    # a misspelt header is plain to see in the message
    ({"pair_id": "p", "rael": "r.png", "fake": "f.png"}, "missing real (the row has columns: fake, pair_id, rael)"),
])
def test_missing_real_or_fake_is_bad_row(tmp_path, row, detail):
    out = parse_row(str(tmp_path / "m.jsonl"), 2, row, allow_absolute=False)
    assert isinstance(out, RejectedRow)
    assert out.reason == "bad_manifest_row"
    assert out.detail == detail
    assert out.row == 2


def test_non_json_line_is_rejected_and_reading_goes_on(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{this is not json\n[1, 2]\n" + json.dumps(ROWS[2]) + "\n")
    records = list(read_manifest(str(path)))
    assert [type(r).__name__ for r in records] == ["PairInput", "RejectedRow", "RejectedRow", "PairInput"]
    bad, not_object = records[1], records[2]
    assert bad.reason == not_object.reason == "bad_manifest_row"
    assert bad.detail.startswith("not JSON")
    assert not_object.detail.startswith("not a JSON object")
    assert (bad.pair_id, bad.row) == ("m.jsonl:1", 1)
    assert records[3].pair_id == "c3" and records[3].row == 3
    assert count_rows(str(path)) == 4


def test_optional_fields_carry_over_and_empty_becomes_none(tmp_path):
    manifest = str(tmp_path / "m.csv")
    full = parse_row(manifest, 0, ROWS[0], allow_absolute=False)
    # the category as FiFa names it (`pipelines.fifa.categories`); the method as written
    assert (full.method, full.category, full.subject_id, full.source_dataset) == (
        "faceswap", "face swap", "alice", "ff++")
    empty = parse_row(manifest, 1, ROWS[1], allow_absolute=False)
    assert empty.subject_id is None and empty.source_dataset is None
    assert empty.method == "" and empty.category == ""  # PairInput's typed defaults
    absent = parse_row(manifest, 2, {"real": "r.png", "fake": "f.png"}, allow_absolute=False)
    assert absent.subject_id is None and absent.source_dataset is None
    # a numeric subject id (Parquet/JSON int) becomes a string
    numeric = parse_row(manifest, 3, {"real": "r.png", "fake": "f.png", "subject_id": 17}, False)
    assert numeric.subject_id == "17"
    # rejected rows keep the optional fields too, with empty strings as None
    rejected = parse_row(manifest, 4, {"real": "/abs.png", "fake": "f.png", "method": "m",
                                       "category": "", "subject_id": "s"}, False)
    assert (rejected.method, rejected.category, rejected.subject_id) == ("m", None, "s")


def test_default_pair_id_is_a_stable_hash(tmp_path):
    manifest = str(tmp_path / "m.jsonl")
    row = {"real": "pairs/a.png", "fake": "pairs/b.png"}
    first = parse_row(manifest, 0, row, False).pair_id
    second = parse_row(str(tmp_path / "other" / "n.jsonl"), 9, dict(row), False).pair_id
    assert first == second
    assert first.startswith("p") and len(first) == 17
    assert parse_row(manifest, 0, {"real": "pairs/a.png", "fake": "pairs/c.png"}, False).pair_id != first
    assert parse_row(manifest, 0, {"real": "pairs/b.png", "fake": "pairs/a.png"}, False).pair_id != first
    # an empty pair_id counts as absent; a given one is kept
    assert parse_row(manifest, 0, {**row, "pair_id": ""}, False).pair_id == first
    assert parse_row(manifest, 0, {**row, "pair_id": 42}, False).pair_id == "42"


def test_a_line_that_is_not_utf8_is_one_bad_row(tmp_path):
    path = tmp_path / "m.jsonl"
    bad = b'{"real": "\xff\xfe.png", "fake": "f.png"}\n'
    path.write_bytes(json.dumps(ROWS[0]).encode() + b"\n" + bad + json.dumps(ROWS[2]).encode() + b"\n")
    records = list(read_manifest(str(path)))
    assert [type(r).__name__ for r in records] == ["PairInput", "RejectedRow", "PairInput"]
    assert records[1].reason == "bad_manifest_row" and records[1].row == 1
    assert count_rows(str(path)) == 3


def test_unreadable_manifest_stops_before_the_run(tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.fifa.settings import FifaSettings
    from pipelines.fifa_annotate import FifaOptions

    path = tmp_path / "m.parquet"
    path.write_bytes(b"not a parquet file at all")
    options = PipelineOptions(["--input", str(path)]).view_as(FifaOptions)
    with pytest.raises(SystemExit, match="cannot read"):
        FifaSettings.from_options(options)
