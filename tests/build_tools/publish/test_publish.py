"""`facext publish` on real pipeline output: the Hub tree loads with `datasets`, holds the
rows of the Arrow shards, has a card whose numbers are the run's, is byte-identical when
exported twice, and refuses what it cannot publish.

Two pipeline runs (module fixtures): generated pairs with the offline describer split
into train and test, and a few pairs described and rated by a local OpenAI-compatible
server with `--test_fraction 0` (every test split empty, and a card with model use).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from build_tools.publish.card import REJECTED
from build_tools.publish.command import publish
from build_tools.publish.export import STAGING, UPLOAD_STATE, PublishError, export_for_hub
from schemas.fifa import SPLITS, TASKS
from schemas.fifa import TASK_FAMILIES as FAMILIES

LLM_MODEL = "qwen2.5-vl-7b-instruct"
# huggingface_hub's LFS upload passes a file as httpx `data=`, which httpx 0.28 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
FILE_NAME = re.compile(r"(?P<split>\w+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.parquet")


def _run(manifest: Path, output: Path, *extra: str) -> dict:
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from pipelines.fifa_annotate import run

    run(["--input", str(manifest), "--output", str(output), *extra], runner=FnApiRunner())
    return json.loads((output / "run_report.json").read_text())


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """Six good pairs and the generator's bad ones; the pairs lose their subject ids (the
    generator has two identities), so they split by pair and both splits get samples."""
    from pipelines.fifa.sample_data import make_sample_pairs

    folder = tmp_path_factory.mktemp("publish_pairs")
    make_sample_pairs(folder, n=6, seed=3)
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("subject_id", None)
    (folder / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def output(pairs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("publish_out") / "fifa"
    report = _run(pairs / "mixed.jsonl", out, "--test_fraction", "0.5", "--max_rows_per_shard", "40")
    assert all(report["samples"]["by_split"][s] for s in SPLITS) and report["pairs_rejected"]
    return out


@pytest.fixture(scope="module")
def report(output) -> dict:
    return json.loads((output / "run_report.json").read_text())


@pytest.fixture(scope="module")
def exported(output, tmp_path_factory) -> tuple[Path, dict]:
    dest = tmp_path_factory.mktemp("publish_hub") / "hub"
    return dest, export_for_hub(output, dest, progress=False)


@pytest.fixture(scope="module")
def llm_output(pairs, tmp_path_factory) -> Path:
    """Two good pairs described and rated by a model (the local server), all in train."""
    from build_tools.fakes.fifa_model import fifa_responder
    from build_tools.fakes.llm_server import LocalLlmServer

    root = tmp_path_factory.mktemp("publish_llm")
    good = [json.loads(line) for line in (pairs / "mixed.jsonl").read_text().splitlines()]
    good = [r for r in good if not r.get("expected_reject")][:2]
    (pairs / "llm.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))  # paths relative to it
    mp = pytest.MonkeyPatch()
    mp.setenv("OPENAI_API_KEY", "sk-facext-publish-test")
    try:
        with LocalLlmServer(responder=fifa_responder) as server:
            _run(pairs / "llm.jsonl", root / "out", "--describer", "openai-compatible", "--rater",
                 "openai-compatible", "--llm_base_url", server.openai_base_url, "--llm_model", LLM_MODEL,
                 "--llm_cache", str(root / "cache"), "--test_fraction", "0")
    finally:
        mp.undo()
    return root / "out"


# --- helpers ----------------------------------------------------------------------------------


def _arrow_table(output: Path, split: str):
    """The pipeline's rows of a split, as the Arrow shards hold them."""
    import datasets

    return datasets.load_from_disk(str(output / split)).data.table


def _family_rows(table, family: str) -> list[dict]:
    """The image rows holding samples of the family, with only those samples (as Python
    rows, in the shards' order): written without the export's code."""
    out = []
    for row in table.to_pylist():
        mine = [s for s in row["samples"] if s["task"] in FAMILIES[family]]
        if mine:
            out.append({**row, "samples": mine})
    return out


def _samples(rows) -> int:
    return sum(len(r) for r in rows["samples"])


def _parquet_table(dest: Path, pattern: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(dest.glob(pattern))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else None


def _card_body(dest: Path) -> str:
    return (dest / "README.md").read_text().split("\n---\n", 1)[1]


def _section(body: str, heading: str) -> str:
    """The text under a markdown heading, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#+ |\Z)", body, re.DOTALL | re.MULTILINE)
    assert match, f"no section {heading!r} in the card"
    return match.group(1)


def _table(text: str) -> list[dict[str, str]]:
    """The first markdown table in `text` as rows of header -> cell (backticks dropped)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip().strip("`") for c in line.strip("|").split("|")] for line in lines]
    header, rows = cells[0], cells[2:]
    return [dict(zip(header, row, strict=True)) for row in rows]


def _number(cell: str) -> float | int | None:
    if cell in ("n/a", "–", ""):
        return None
    return float(cell) if re.search(r"[.e]", cell) else int(cell)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and UPLOAD_STATE not in p.parts}


# --- the Hub tree loads with datasets ---------------------------------------------------------


def test_every_config_loads_with_the_runs_counts_and_an_image_feature(exported, report):
    import datasets
    from PIL import Image

    dest, summary = exported
    by_task_split = report["samples"]["by_task_and_split"]
    default = datasets.load_dataset(str(dest))
    assert {s: _samples(default[s]) for s in default} == report["samples"]["by_split"]
    assert {s: default[s].num_rows for s in default} == report["images"]["by_split"]
    for family, tasks in FAMILIES.items():
        ds = datasets.load_dataset(str(dest), family)
        expected = {s: sum(by_task_split[t][s] for t in tasks) for s in SPLITS}
        assert {s: _samples(ds[s]) for s in ds} == expected, family
        assert isinstance(ds["train"].features["image"], datasets.Image)
        assert isinstance(ds["train"][0]["image"], Image.Image)
        assert {sample["task"] for row in ds["train"]["samples"] for sample in row} == set(tasks)
    rejected = datasets.load_dataset(str(dest), REJECTED)
    assert list(rejected) == [REJECTED] and rejected[REJECTED].num_rows == report["pairs_rejected"]
    assert summary["splits"] == {**report["samples"]["by_split"], REJECTED: report["pairs_rejected"]}


def test_rows_are_the_arrow_shards_rows_in_their_order(exported, output):
    import datasets

    dest, _ = exported
    from_disk = datasets.load_from_disk(str(output))
    for split in SPLITS:
        shards = _arrow_table(output, split)
        default = _parquet_table(dest, f"data/default/{split}-*.parquet")
        # Every column, image bytes included, equal and in the shards' order.
        assert default.cast(shards.schema).equals(shards), split
        for family in FAMILIES:
            written = _parquet_table(dest, f"data/{family}/{split}-*.parquet")
            assert written.cast(shards.schema).to_pylist() == _family_rows(shards, family), (family, split)
        loaded = datasets.load_dataset(str(dest), split=split).select_columns(["image_id", "samples"])
        disk = from_disk[split].select_columns(["image_id", "samples"])
        assert loaded["image_id"] == disk["image_id"] and loaded["samples"] == disk["samples"]
        # Each crop once in a config: no image id twice.
        assert len(set(loaded["image_id"])) == loaded.num_rows
    rejected = _parquet_table(dest, f"{REJECTED}/*.parquet")
    assert rejected.cast(_arrow_table(output, REJECTED).schema).equals(_arrow_table(output, REJECTED))


def test_masks_decode_from_the_hub_rows(exported):
    import datasets

    from schemas.masks import decode_mask, mask_area

    dest, _ = exported
    ds = datasets.load_dataset(str(dest), "region", split="train").select_columns(["samples"])
    grounded = [sample for row in ds["samples"] for sample in row if sample["masks"]]
    assert grounded
    for row in grounded:
        assert row["conversations"][1]["value"].count("[SEG]") == len(row["masks"])
        for rle in row["masks"]:
            mask = decode_mask(rle)
            assert mask.shape == tuple(rle["size"]) and mask_area(rle) == int(mask.sum()) > 0


# --- Parquet files ----------------------------------------------------------------------------


def test_parquet_files_have_small_row_groups_a_page_index_and_hf_features(exported):
    import pyarrow.parquet as pq

    from schemas.features import hf_features
    from schemas.fifa import FifaImage, RejectedRow

    dest, summary = exported
    files = sorted(dest.rglob("*.parquet"))
    assert len(files) == summary["files"] >= (len(FAMILIES) + 1) * len(SPLITS) + 1
    for path in files:
        meta = pq.ParquetFile(path).metadata
        assert meta.num_rows and all(meta.row_group(i).num_rows <= 100 for i in range(meta.num_row_groups))
        for i in range(meta.num_row_groups):
            for j in range(meta.num_columns):
                column = meta.row_group(i).column(j)
                assert column.has_offset_index, (path.name, column.path_in_schema)
                if column.path_in_schema.startswith("image."):
                    assert column.compression == "UNCOMPRESSED"  # PNG bytes, stored as they are
                else:
                    assert column.compression == "SNAPPY", column.path_in_schema
        record = RejectedRow if path.parent.name == REJECTED else FifaImage
        hf = json.loads(pq.ParquetFile(path).schema_arrow.metadata[b"huggingface"])
        assert hf["info"]["features"] == hf_features(record).to_dict()
        name = FILE_NAME.fullmatch(path.name)
        siblings = sorted(path.parent.glob(f"{name['split']}-*.parquet"))
        assert int(name["n"]) == len(siblings) and siblings.index(path) == int(name["i"])


def test_exporting_twice_gives_the_same_bytes_and_keeps_unchanged_files(exported, output, tmp_path):
    dest, summary = exported
    again = export_for_hub(output, tmp_path / "again", progress=False)
    assert _files(tmp_path / "again") == _files(dest)
    assert {k: v for k, v in again.items() if k not in ("dest", "seconds")} == \
        {k: v for k, v in summary.items() if k not in ("dest", "seconds")}
    # Re-exporting in place leaves every file as it was (mtime too) and the uploader's state.
    state = tmp_path / "again" / UPLOAD_STATE / "state.json"
    state.parent.mkdir()
    state.write_text("{}")
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "again").rglob("*.parquet")}
    export_for_hub(output, tmp_path / "again", progress=False)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "again").rglob("*.parquet")} == mtimes
    assert state.read_text() == "{}"


def test_small_shards_rotate_into_numbered_files_that_still_load(exported, output, tmp_path, report):
    import datasets
    import pyarrow.parquet as pq

    dest, _ = exported
    small = tmp_path / "small"
    limit = 900_000  # two rows of 512 px PNG crops
    summary = export_for_hub(output, small, max_shard_bytes=limit, row_group_rows=1, progress=False)
    default_test = sorted((small / "data" / "default").glob("test-*.parquet"))
    assert len(default_test) >= 3 and summary["files"] > len(list(dest.rglob("*.parquet")))
    groups = []
    for path in small.rglob("*.parquet"):
        parquet = pq.ParquetFile(path)
        meta = parquet.metadata
        assert all(meta.row_group(i).num_rows == 1 for i in range(meta.num_row_groups))
        name = FILE_NAME.fullmatch(path.name)
        assert int(name["n"]) == len(list(path.parent.glob(f"{name['split']}-*.parquet")))
        # A file ends before the row group that would take it past the limit (Arrow bytes).
        sizes = [parquet.read_row_group(i).nbytes for i in range(meta.num_row_groups)]
        assert sum(sizes[:-1]) <= limit
        groups.append(meta.num_row_groups)
    assert max(groups) > 1
    for family in ("default", *FAMILIES):
        for split in SPLITS:
            pattern = f"data/{family}/{split}-*.parquet"
            assert _parquet_table(small, pattern).equals(_parquet_table(dest, pattern))
    ds = datasets.load_dataset(str(small), "region")
    assert {s: _samples(ds[s]) for s in ds} == {
        s: sum(report["samples"]["by_task_and_split"][t][s] for t in FAMILIES["region"]) for s in SPLITS}
    # Re-exporting with the default size removes the smaller files it no longer writes.
    export_for_hub(output, small, progress=False)
    assert _files(small) == _files(dest)


# --- the dataset card -------------------------------------------------------------------------


def test_card_metadata_parses_and_matches_the_files(exported):
    import pyarrow.parquet as pq
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    dest, summary = exported
    card = DatasetCard.load(dest / "README.md")
    data = card.data
    assert data.license == "unknown" and data.language == ["en"] and "facext" in data.tags
    assert "image-text-to-text" in data.task_categories and data.size_categories == ["n<1K"]
    configs = MetadataConfigs.from_dataset_card_data(data)
    assert set(configs) == {"default", *FAMILIES, REJECTED}
    assert configs.get_default_config_name() == "default"
    infos = DatasetInfosDict.from_dataset_card_data(data)
    for name, config in configs.items():
        info = infos[name]
        assert [f["split"] for f in config["data_files"]] == list(info.splits)
        for entry in config["data_files"]:
            files = sorted(dest.glob(entry["path"]))
            assert files
            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
            assert info.splits[entry["split"]].num_examples == rows, (name, entry["split"])
        files = {f for entry in config["data_files"] for f in dest.glob(entry["path"])}
        assert info.download_size == sum(f.stat().st_size for f in files)
        assert info.dataset_size == sum(s.num_bytes for s in info.splits.values()) > 0
        assert "image" in info.features if name != REJECTED else "reason" in info.features
    assert summary["configs"]["default"]["download_size"] == infos["default"].download_size


def test_card_text_reports_the_runs_numbers(exported, report):
    from fict import load_tree

    dest, summary = exported
    body = _card_body(dest)
    inputs = {row["quantity"]: row["value"] for row in _table(_section(body, "Inputs"))}
    assert int(inputs["inputs"]) == report["inputs"]
    assert int(inputs["pairs written"]) == report["pairs_written"]
    assert int(inputs["pairs rejected"]) == report["pairs_rejected"]
    assert int(inputs["samples"]) == report["samples"]["total"]

    stages = _table(_section(body, "Stages"))
    assert [[r["stage"], int(r["in"]), int(r["rejected"]), int(r["out"])] for r in stages] == \
        [[s["stage"], s["in"], s["rejected"], s["out"]] for s in report["stages"]]
    rejects = {}
    for row in _table(_section(body, "Rejects by stage and reason")):
        rejects.setdefault(row["stage"], {})[row["reason"]] = int(row["pairs"])
    assert rejects == report["rejected"]["by_stage_and_reason"]

    samples = _table(_section(body, "Samples by task and split"))
    by_task = {r["task"]: {s: int(r[s]) for s in SPLITS} for r in samples if r["task"] != "total"}
    assert by_task == report["samples"]["by_task_and_split"] and list(by_task) == list(TASKS)
    total = next(r for r in samples if r["task"] == "total")
    assert {s: int(total[s]) for s in SPLITS} == report["samples"]["by_split"]

    ratings = report["ratings"]
    text = _section(body, "Ratings")
    assert f"{ratings['pairs_rated']} pairs rated" in text
    for row in _table(text):
        criterion = row.pop("criterion")
        assert _number(row.pop("mean")) == ratings["mean"][criterion]
        assert {k: int(v) for k, v in row.items()} == ratings["histograms"][criterion]
    flagged, coverage = _section(body, "Concepts").split("of the flagged atomic concepts:", 1)
    most = {r["concept"]: int(r["pairs"]) for r in _table(flagged)}
    expected = {c: n for c, n in report["concepts"]["flagged_pairs"].items() if n}
    assert most and all(expected[c] == n for c, n in most.items())
    assert min(most.values()) >= max((n for c, n in expected.items() if c not in most), default=0)
    assert f"{len(expected)} of 184 FICT concepts" in flagged
    row = _table(coverage)[0]
    assert {k: int(v) for k, v in row.items() if k != "coverage"} == report["concepts"]["coverage_histogram"]
    h = {r["measure"]: r for r in _table(_section(body, "Hallucination check"))}
    assert int(h["texts"]["checked"]) == report["hallucination"]["texts"]
    assert int(h["texts"]["hallucinating"]) == report["hallucination"]["texts_hallucinating"]
    assert _number(h["texts"]["rate"]) == report["hallucination"]["rate"]
    assert int(h["concept mentions"]["checked"]) == report["hallucination"]["mentions"]
    assert "No language model was called" in _section(body, "Language-model use")

    built = _section(body, "How it was built")
    assert f"`{report['facext_version']}`" in built and f"`{report['options_hash']}`" in built
    tree = load_tree()
    assert (f"FICT version {report['fict_version']}: {len(tree)} concepts, {len(tree.atomic)} atomic and "
            f"{len(tree) - len(tree.atomic)} parents") in built
    options = {r["option"]: r["value"] for r in _table(_section(body, "Options"))}
    assert options["describer"] == report["options"]["describer"] == "evidence"
    assert options["mask_mode"] == report["options"]["mask_mode"] == "hysteresis"
    assert float(options["coverage_threshold"]) == report["options"]["coverage_threshold"]
    templates = [[r["template"], r["version"], int(r["pairs"])] for r in _table(_section(body, "Prompt templates"))]
    assert templates == [[t["id"], t["version"], t["pairs"]] for t in report["prompt_templates"]]
    assert "templated" in _section(body, "Known limits")

    configs = {r["config"]: r for r in _table(_section(body, "Configurations"))}
    for name, config in summary["configs"].items():
        for split in (*SPLITS, REJECTED):
            cell, numbers = configs[name][split], config["splits"].get(split)
            if numbers is None:
                assert cell == "–", (name, split)
            elif split == REJECTED:
                assert int(cell) == numbers["rows"]
            else:  # samples, and the image rows that hold them
                assert cell == f"{numbers['samples']} ({numbers['rows']} images)", (name, split)
        assert int(configs[name]["Parquet bytes"]) == config["download_size"]
    citation = _section(body, "Citation")
    assert "Fake-in-Facext: Towards Fine-Grained Explainable DeepFake Analysis" in citation
    assert 'load_dataset("path/to/this/folder", "region", split="train")' in _section(body, "Loading")


def test_card_of_a_model_described_run_with_empty_test_splits(llm_output, tmp_path):
    import datasets
    from huggingface_hub import DatasetCard

    report = json.loads((llm_output / "run_report.json").read_text())
    assert report["samples"]["by_split"]["test"] == 0 and report["llm"]["calls"] > 0
    dest = tmp_path / "hub"
    summary = export_for_hub(llm_output, dest, repo_id="someone/fifa-llm", license="cc-by-4.0",
                             pretty_name="FiFa LLM test", progress=False)
    assert not list(dest.glob("data/*/test-*"))  # datasets cannot load an empty split
    for name in ("default", *FAMILIES):
        ds = datasets.load_dataset(str(dest), name)
        assert list(ds) == ["train"] and ds["train"].num_rows == summary["configs"][name]["splits"]["train"]["rows"]
    card = DatasetCard.load(dest / "README.md")
    assert card.data.license == "cc-by-4.0" and card.data.pretty_name == "FiFa LLM test"
    assert all([f["split"] for f in c["data_files"]] == ["train"]
               for c in card.data.configs if c["config_name"] != REJECTED)
    body = _card_body(dest)
    llm = report["llm"]
    rows = {r["backend/model"]: r for r in _table(_section(body, "Language-model use"))}
    model = rows[f"openai-compatible/{LLM_MODEL}"]
    by_model = llm["by_model"][f"openai-compatible/{LLM_MODEL}"]
    for header, key in (("calls", "calls"), ("input tokens", "input_tokens"), ("output tokens", "output_tokens"),
                        ("cache misses", "cache_misses"), ("retries", "retries")):
        assert int(model[header]) == by_model[key] and int(rows["total"][header]) == llm[key]
    assert _number(model["cost (USD)"]) == by_model["cost_usd"]  # None: no price for a local model
    built = _section(body, "How it was built")
    assert f"`openai-compatible` with model `{LLM_MODEL}`" in built
    assert "written by a language model" in _section(body, "Known limits")
    assert 'load_dataset("someone/fifa-llm", "region", split="train")' in _section(body, "Loading")
    ratings = _table(_section(body, "Ratings"))
    assert {r["criterion"]: _number(r["mean"]) for r in ratings} == report["ratings"]["mean"]


# --- publish and bad inputs -------------------------------------------------------------------


@pytest.fixture
def hub_client(monkeypatch, tmp_path):
    """huggingface_hub talks plain LFS (the local server does not speak Xet), finds no saved
    token, and shows no progress."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_ID_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored_tokens"))
    monkeypatch.setenv("FACEXT_PROGRESS", "0")


def test_publish_to_a_local_dir_uploads_nothing_and_an_upload_resumes_from_output(output, tmp_path, hub_client,
                                                                                 monkeypatch):
    import datasets
    from huggingface_hub import snapshot_download

    from build_tools.fakes.hub_server import LocalHubServer

    with LocalHubServer(tokens={"hf_publish_test": "write"}) as server:
        local = publish(output, repo_id="someone/fifa", local_dir=tmp_path / "local", endpoint=server.url,
                        progress=False)
        assert local["uploaded"] is False and not server.requests
        assert (tmp_path / "local" / "README.md").is_file()

        staging = output / STAGING
        monkeypatch.setenv("HF_TOKEN", "hf_publish_test")
        try:
            first = publish(output, repo_id="someone/fifa", endpoint=server.url, progress=False)
            assert first["uploaded"] and first["upload"].uploaded == first["upload"].files
            assert _files(staging) == _files(tmp_path / "local")
            assert (staging / UPLOAD_STATE).is_dir()  # the uploader's state, kept for a resume
            snapshot = Path(snapshot_download("someone/fifa", repo_type="dataset", endpoint=server.url,
                                              token="hf_publish_test", local_dir=tmp_path / "snapshot"))
            assert {k: v for k, v in _files(snapshot).items() if not k.startswith(".")} == _files(staging)
            ds = datasets.load_dataset(str(snapshot), "region")
            assert {s: ds[s].num_rows for s in ds} == \
                {s: v["rows"] for s, v in first["configs"]["region"]["splits"].items()}
            # Publishing again re-exports the same bytes next to the kept state: nothing is sent.
            commits = len(server.commits("someone/fifa"))
            again = publish(output, repo_id="someone/fifa", endpoint=server.url, progress=False)
            assert again["upload"].already_committed and again["upload"].uploaded == 0
            assert len(server.commits("someone/fifa")) == commits
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def test_bad_inputs_give_clear_errors(output, tmp_path, hub_client):
    empty = tmp_path / "not_an_output"
    empty.mkdir()
    with pytest.raises(PublishError, match="run_report.json"):
        export_for_hub(empty, tmp_path / "hub", progress=False)
    with pytest.raises(PublishError, match="run_report.json"):
        publish(empty, local_dir=tmp_path / "hub", progress=False)

    waiting = tmp_path / "waiting"
    shutil.copytree(output, waiting, ignore=shutil.ignore_patterns(STAGING))
    report = json.loads((waiting / "run_report.json").read_text())
    (waiting / "run_report.json").write_text(json.dumps({**report, "status": "awaiting_batch"}))
    with pytest.raises(PublishError, match="batch"):
        publish(waiting, local_dir=tmp_path / "hub", progress=False)

    # Shards that disagree with the report: nothing is left behind, not even temporary files.
    report["samples"]["by_task_and_split"]["det"]["train"] += 1
    (waiting / "run_report.json").write_text(json.dumps(report))
    with pytest.raises(PublishError, match=r"det/train: \d+ samples, the report says"):
        export_for_hub(waiting, tmp_path / "hub", progress=False)
    assert not [p for p in (tmp_path / "hub").rglob("*") if p.is_file()]

    with pytest.raises(PublishError, match="--repo-id"):
        publish(output, progress=False)
    with pytest.raises(PublishError, match="HF_TOKEN"):  # hub_client: no token anywhere
        publish(output, repo_id="someone/fifa", progress=False)
    with pytest.raises(PublishError, match="repo id"):
        publish(output, repo_id="not a repo", token="hf_x", progress=False)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(PublishError, match="notes.txt"):
        export_for_hub(output, foreign, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(PublishError, match="inside OUTPUT"):
        export_for_hub(output, output / "train" / "hub", progress=False)


def test_the_publish_command_resumes_an_interrupted_upload_without_resending(output, tmp_path, hub_client,
                                                                             monkeypatch, capsys):
    """`facext publish` end to end: the Hub refuses the third Parquet file, the command
    fails saying how to resume; the same command again sends only what is missing and
    makes the one commit."""
    import hashlib

    from build_tools.cli import main
    from build_tools.fakes.hub_server import Fault, FaultRule, LocalHubServer

    monkeypatch.setenv("HF_TOKEN", "hf_cli_test")
    command = ["publish", str(output), "--repo-id", "someone/cli", "--private", "--revision", "v1"]
    with LocalHubServer(tokens={"hf_cli_test": "write"}) as server:
        command += ["--endpoint", server.url]
        server.set_faults([FaultRule("lfs_upload", Fault.status(400, message="BadDigest"), skip=2)])
        try:
            assert main(command) == 2
            err = capsys.readouterr().err
            assert "re-run the same command to resume" in err and "hf_cli_test" not in err
            assert server.commits("someone/cli") == [] or all(
                not c.tree.keys() - {".gitattributes"} for c in server.commits("someone/cli"))

            server.set_faults(None)
            assert main(command) == 0
            out, err = capsys.readouterr()
            assert "committed" in out and "someone/cli" in out
            report = json.loads((output / "run_report.json").read_text())
            assert f"exported {report['samples']['total']} samples and {report['pairs_rejected']} rejected rows" in out
            assert "note: the card's license is 'unknown': pass --license" in err
            parquet = sorted((output / STAGING).rglob("*.parquet"))
            for path in parquet:  # each file's bytes arrived whole once (the refused one: twice)
                oid = hashlib.sha256(path.read_bytes()).hexdigest()
                assert server.uploads_stored(oid) == 1
                assert server.bytes_received(oid) in (path.stat().st_size, 2 * path.stat().st_size)
            refused = [p for p in parquet if server.bytes_received(
                hashlib.sha256(p.read_bytes()).hexdigest()) == 2 * p.stat().st_size]
            assert len(refused) == 1
            ours = [c for c in server.commits("someone/cli") if c.tree.keys() - {".gitattributes"}]
            assert len(ours) == 1 and server.branches("someone/cli")["v1"] == ours[0].oid
            assert {f"{p.relative_to(output / STAGING).as_posix()}" for p in parquet} <= set(ours[0].tree)
        finally:
            shutil.rmtree(output / STAGING, ignore_errors=True)
