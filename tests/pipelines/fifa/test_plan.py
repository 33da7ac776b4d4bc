"""Dry runs and estimates: the prompts a run would send, rendered and priced without a call."""

from __future__ import annotations

import json

import cv2
import pytest


@pytest.fixture(scope="module")
def two_pairs(tmp_path_factory):
    from pipelines.fifa.sample_data import make_sample_pairs

    folder = tmp_path_factory.mktemp("plan_pairs")
    make_sample_pairs(folder, n=2, seed=9)
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    # two good pairs and one bad: the estimate's pass rate sees the bad one
    keep = [r for r in rows if not r.get("expected_reject")][:2] + [r for r in rows if r.get("expected_reject")][:1]
    (folder / "three.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
    return folder / "three.jsonl"


@pytest.fixture
def no_keys(monkeypatch):
    for variable in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(variable, raising=False)


def test_dry_run_renders_every_prompt_with_its_images(two_pairs, tmp_path, no_keys):
    from pipelines.fifa_annotate import run

    out = tmp_path / "out"
    run(["--input", str(two_pairs), "--output", str(out), "--describer", "gemini", "--rater", "gemini",
         "--dry_run", "--dry_run_pairs", "2"])
    root = out / "dry_run"
    index = json.loads((root / "index.json").read_text())
    assert len(index) == 2
    for pair in index:
        files = sorted((root / pair["pair_id"]).glob("*.md"))
        assert len(files) == pair["calls"] == len(pair["prompts"])
        templates = [p["template"]["id"] for p in pair["prompts"]]
        assert templates[-1] == "fifa_rating@v1" and templates.count("fifa_rating@v1") == 1
        assert templates.count("fifa_image_aggregation@v1") == 1
        assert templates[0] == "fifa_concept_explanation@v1"
        for prompt in pair["prompts"]:
            text = (root / prompt["file"]).read_text()
            assert prompt["template"]["version"] in text and "## Answer schema" in text
            for name in prompt["images"]:
                image = cv2.imread(str(root / name))
                assert image is not None and image.shape[:2] == (512, 512)
        # A concept prompt shows both crops with the concept outlined in pure green.
        concept = pair["prompts"][0]
        for name in concept["images"]:
            image = cv2.imread(str(root / name))
            green = (image[..., 1] == 255) & (image[..., 0] == 0) & (image[..., 2] == 0)
            assert green.sum() > 20
    assert not (out / "train").exists() and not (out / "run_report.json").exists()


def test_dry_run_with_offline_backends_says_nothing_is_called(two_pairs, tmp_path, no_keys, capsys):
    from pipelines.fifa_annotate import run

    run(["--input", str(two_pairs), "--output", str(tmp_path / "out"), "--dry_run"])
    assert "call no model" in capsys.readouterr().out


def test_estimate_counts_the_calls_a_dry_run_renders(two_pairs, tmp_path, no_keys, capsys):
    from build_tools.cli import main
    from pipelines.fifa_annotate import run
    from pipelines.llm.prices import load_prices

    run(["--input", str(two_pairs), "--output", str(tmp_path / "out"), "--describer", "openai",
         "--rater", "openai", "--dry_run", "--dry_run_pairs", "2"])
    index = json.loads((tmp_path / "out" / "dry_run" / "index.json").read_text())
    per_pair = sum(p["calls"] for p in index) / len(index)
    capsys.readouterr()
    assert main(["estimate", "--input", str(two_pairs), "--describer", "openai", "--rater", "openai",
                 "--sample", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 3 and result["sampled_rows"] == 3 and result["passed_rows"] == 2
    assert result["expected_pairs"] == 2
    model = result["models"]["openai/gpt-4o-mini"]
    assert model["calls_per_pair"] == pytest.approx(per_pair, abs=0.01)
    assert model["calls"] == sum(p["calls"] for p in index)
    expected = load_prices().cost("gpt-4o-mini", model["input_tokens"], model["output_tokens"])
    assert model["cost_usd"] == pytest.approx(expected, abs=1e-4)
    assert main(["estimate", "--input", str(two_pairs), "--describer", "openai", "--rater", "openai",
                 "--sample", "2", "--json", "--batch"]) == 0
    batch = json.loads(capsys.readouterr().out)
    assert batch["cost_usd"] == pytest.approx(result["cost_usd"] / 2, rel=0.01)


def test_estimate_prints_a_readable_table(two_pairs, no_keys, capsys):
    from build_tools.cli import main

    assert main(["estimate", "--input", str(two_pairs), "--describer", "gemini", "--sample", "1"]) == 0
    out = capsys.readouterr().out
    assert "gemini/gemini-2.5-flash" in out and "calls" in out and "$" in out


def test_rater_none_keeps_every_pair_unrated(two_pairs, tmp_path, no_keys):
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from datasets import load_from_disk

    from pipelines.fifa_annotate import run

    out = tmp_path / "out"
    run(["--input", str(two_pairs), "--output", str(out), "--rater", "none"], runner=FnApiRunner())
    report = json.loads((out / "run_report.json").read_text())
    assert report["pairs_written"] == 2 and report["ratings"]["pairs_rated"] == 0
    rows = list(load_from_disk(str(out / "train"))) + list(load_from_disk(str(out / "test")))
    assert rows and all(r["provenance"]["rater"] is None for r in rows)
    assert all(s["rating"] is None for r in rows for s in r["samples"])
    assert report["hallucination"]["texts"] > 0 and report["hallucination"]["rate"] == 0.0


def test_estimate_counts_a_repeated_pair_id_once(two_pairs, no_keys, capsys):
    """The pipeline rejects a row repeating an earlier row's pair_id (duplicate_pair_id):
    the estimate counts unique ids only.  The manifest comes through --config, as the
    pipeline reads it."""
    from build_tools.cli import main
    from pipelines.fifa.plan import estimate_text

    rows = two_pairs.read_text().splitlines()  # two good pairs, one bad
    repeated = two_pairs.with_name("repeated.jsonl")
    repeated.write_text("\n".join([rows[0], rows[0], rows[1], rows[2], rows[1]]) + "\n")
    config = two_pairs.with_name("estimate.yaml")
    config.write_text(f"input: {repeated}\n")
    assert main(["estimate", "--config", str(config), "--sample", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input"] == str(repeated)
    assert (result["rows"], result["duplicate_rows"]) == (5, 2)
    assert (result["sampled_rows"], result["passed_rows"]) == (3, 2)  # each id tried once
    assert result["expected_pairs"] == 2
    assert "5 manifest rows (2 repeat an earlier row's pair_id" in estimate_text(result)


def test_estimate_for_n_pairs_adds_compute_bytes_and_both_price_tiers(two_pairs, no_keys, capsys):
    """`--pairs N` prices N pairs like the sampled ones: calls scale with N times the pass
    rate, each model shows its batch price beside the standard one, and the compute and
    bytes follow the measured per-pair costs of pipelines/fifa/data/scale.yaml."""
    from build_tools.cli import main
    from pipelines.fifa.scale import load_scale

    argv = ["estimate", "--input", str(two_pairs), "--describer", "openai", "--rater", "openai", "--sample", "3",
            "--json"]
    assert main(argv) == 0
    small = json.loads(capsys.readouterr().out)
    assert main([*argv, "--pairs", "30000", "--workers", "4", "--rpm", "500"]) == 0
    big = json.loads(capsys.readouterr().out)
    assert big["rows"] == 30000 and big["expected_pairs"] == 20000  # 2 of the 3 sampled rows pass
    model = big["models"]["openai/gpt-4o-mini"]
    assert model["calls"] == pytest.approx(small["models"]["openai/gpt-4o-mini"]["calls"] * 10000, rel=0.01)
    assert model["cost_usd_batch"] == pytest.approx(model["cost_usd"] / 2, rel=0.01)
    compute, table = big["compute"], load_scale()
    assert compute["vcpu_hours"] == pytest.approx(
        30000 * table["measured"]["cpu_ms_per_pair"] / 3.6e6 / table["dataflow"]["scaling_efficiency"], abs=0.01)
    assert compute["llm_hours"] == pytest.approx(big["calls"] / 500 / 60, abs=0.01)
    assert compute["wall_hours"] == pytest.approx(max(compute["llm_hours"], compute["batch_wall_hours"]), abs=0.01)
    assert compute["samples"] == 20000 * table["measured"]["samples_per_written_pair"]
    assert compute["dataset_gb"] == pytest.approx(20000 * table["measured"]["bytes_per_written_pair"] / 1e9, abs=0.01)
    assert main([*argv[:-1], "--pairs", "30000"]) == 0
    text = capsys.readouterr().out
    assert "30,000 pairs (--pairs)" in text and "with the batch API" in text and "Dataflow n2-standard-4" in text
    assert main([*argv, "--pairs", "0"]) == 2
