"""The pipeline with model-written texts: the real openai and google-genai clients against a
local server that speaks their protocols, with injected failures.

Each generated pair gets its own behaviour from the server (matched by the method name the
prompts carry): rate-limited then fine, always failing, malformed, schema-violating then
fixed, hallucinating, naming no region, rated low.  Otherwise it answers as a model that
follows the prompts would (`fifa_responder`: a concept's text names that concept).  Every input must end in the output or in the rejected
table with the right reason; a re-run must make no call and write the same bytes; no API
key may appear in anything the run writes or logs.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest

from build_tools.fakes.fifa_model import SEAM, fifa_responder
from build_tools.fakes.llm_server import Fault, LocalLlmServer, default_responder

OPENAI_KEY = f"sk-facext-test-{uuid.uuid4().hex}"
GEMINI_KEY = f"AIza-facext-test-{uuid.uuid4().hex}"
LOCAL_MODEL = "qwen2.5-vl-7b-instruct"  # as a vLLM server would serve it
RETRY_AFTER = 0.2
CORRECTION = "did not match the required JSON schema"
# method -> what the server does with that pair's requests, and what must become of the pair
EXPECTED = {
    "lip_recolor": "written",  # every request first gets 429 with Retry-After
    "brow_darken": "llm_failed",  # concept explanations always fail with 500
    "brow_thicken": "llm_invalid_output",  # concept explanations are never JSON
    "iris_recolor": "written",  # the first answer violates the schema, the correction is fine
    "skin_smooth": "hallucinated",  # explanations blame the left earlobe, which was not touched
    "skin_age": "low_rating",  # the rater gives 3
    "hair_recolor": "ungrounded",  # explanations name no facial region at all
}


def _method(call) -> str | None:
    return next((m for m in EXPECTED if m in call.text), None)


def faults(call):
    method = _method(call)
    concept = "fifa_concept_explanation" in json.dumps(call.body) or "is outlined in" in call.text
    if method == "lip_recolor" and call.attempt == 0:
        return Fault.status(429, retry_after=RETRY_AFTER)
    if method == "brow_darken" and concept:
        return Fault.status(500)
    if method == "brow_thicken" and concept:
        return Fault.malformed()
    if method == "iris_recolor" and concept and CORRECTION not in call.text:
        return Fault.invalid({"explanation": ""})  # min_length 1
    return None


def responder(call):
    method = _method(call)
    answer = default_responder(call) if method == "hair_recolor" else fifa_responder(call)
    if isinstance(answer, dict) and method == "skin_smooth" and "explanation" in answer:
        answer["explanation"] = "The left earlobe looks blurred and waxy compared with the real photo."
    if isinstance(answer, dict) and method == "skin_age" and "overall" in answer:
        answer.update(label_accuracy=3, image_consistency=3, evidence_consistency=3, overall=3)
    return answer


@pytest.fixture(scope="module")
def good_pairs(tmp_path_factory) -> Path:
    from pipelines.fifa.sample_data import make_sample_pairs

    folder = tmp_path_factory.mktemp("llm_pairs")
    make_sample_pairs(folder, n=len(EXPECTED), seed=5)
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    good = [r for r in rows if r["method"] in EXPECTED and not r.get("expected_reject")]
    assert sorted(r["method"] for r in good) == sorted(EXPECTED)
    (folder / "good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))
    return folder / "good.jsonl"


def run_llm(manifest: Path, output: Path, cache: Path, backend: str, server, *extra: str):
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from pipelines.fifa_annotate import run

    url = server.openai_base_url if backend.startswith("openai") else server.url
    if backend == "openai-compatible":
        extra = ("--llm_model", LOCAL_MODEL, *extra)
    return run(["--input", str(manifest), "--output", str(output), "--describer", backend, "--rater", backend,
                "--llm_base_url", url, "--llm_cache", str(cache), "--llm_max_attempts", "3",
                "--llm_backoff_s", "0.01", "--llm_concurrency", "4", *extra], runner=FnApiRunner())


def _files(*folders: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for folder in folders for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def openai_runs(good_pairs, tmp_path_factory):
    """Two runs of one job (the second from the cache), logs captured at DEBUG."""
    root = tmp_path_factory.mktemp("llm_openai")
    mp = pytest.MonkeyPatch()
    mp.setenv("OPENAI_API_KEY", OPENAI_KEY)
    mp.setenv("GEMINI_API_KEY", GEMINI_KEY)
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep(level=logging.DEBUG)
    logging.getLogger().addHandler(handler)
    old_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        with LocalLlmServer(responder=responder, faults=faults, latency_s=0.05) as server:
            first = run_llm(good_pairs, root / "out1", root / "cache", "openai-compatible", server)
            first_calls = list(server.generation_calls())
            peak = server.max_in_flight
            server.reset()
            second = run_llm(good_pairs, root / "out2", root / "cache", "openai-compatible", server)
            second_calls = list(server.generation_calls())
            keys_seen = set(server.api_keys_seen)
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(old_level)
        mp.undo()
    return {"root": root, "first": first, "second": second, "first_calls": first_calls,
            "second_calls": second_calls, "logs": records, "keys_seen": keys_seen, "peak": peak}


def _rejected(output: Path) -> dict[str, dict]:
    from datasets import load_from_disk

    return {row["pair_id"]: row for row in load_from_disk(str(output / "rejected"))}


def test_every_pair_ends_written_or_rejected_with_the_right_reason(openai_runs):
    from datasets import load_from_disk

    out = openai_runs["root"] / "out1"
    report = json.loads((out / "run_report.json").read_text())
    assert report["adds_up"] and report["inputs"] == len(EXPECTED)
    rejected = _rejected(out)
    written = {row["pair_id"] for split in ("train", "test") for row in load_from_disk(str(out / split))}
    for pair_id in written | set(rejected):
        method = pair_id.split("-", 2)[2]
        outcome = "written" if pair_id in written else rejected[pair_id]["reason"]
        assert outcome == EXPECTED[method], pair_id
    assert len(written) + len(rejected) == len(EXPECTED)
    by_reason = {row["reason"]: row for row in rejected.values()}
    assert by_reason["llm_failed"]["stage"] == "describe" and "HTTP 500" in by_reason["llm_failed"]["detail"]
    assert by_reason["llm_invalid_output"]["stage"] == "describe"
    assert "not valid JSON" in by_reason["llm_invalid_output"]["detail"]
    assert by_reason["hallucinated"]["stage"] == "rate"
    assert "left_earlobe" in by_reason["hallucinated"]["hallucinated_concepts"]
    ungrounded = by_reason["ungrounded"]
    assert ungrounded["stage"] == "rate" and "image" in ungrounded["detail"]
    assert ungrounded["rating"] is None  # rejected before a rating was paid for
    low = by_reason["low_rating"]
    assert low["stage"] == "rate" and low["rating"]["overall"] == 3 and "--min_rating 6" in low["detail"]


def test_rate_stage_rejects_keep_the_texts_they_were_judged_on(openai_runs, tree):
    """A reviewer sees what was dropped: the image text first, then one per flagged
    concept, names in plain words; the report marks the hallucinated names in them."""
    from build_tools.report_html import _judged_texts

    rejected = {row["reason"]: row for row in _rejected(openai_runs["root"] / "out1").values()}
    for reason in ("hallucinated", "ungrounded", "low_rating"):
        texts = rejected[reason]["texts"]
        assert texts[0]["concept"] is None and len(texts) > 1
        assert all(t["concept"] in tree.by_id and t["text"] and "[[" not in t["text"] for t in texts[1:])
    earlobe = [t for t in rejected["hallucinated"]["texts"] if "left earlobe" in t["text"]]
    assert earlobe
    marked = _judged_texts(rejected["hallucinated"]["texts"], ["left_earlobe"], tree)
    assert marked.count("<mark>left earlobe</mark>") == sum(t["text"].count("left earlobe") for t in earlobe)
    assert all(row["texts"] == [] for row in rejected.values() if row["stage"] != "rate")


def test_failures_were_retried_and_retry_after_honoured(openai_runs):
    calls = openai_runs["first_calls"]
    report = json.loads((openai_runs["root"] / "out1" / "run_report.json").read_text())
    limited = [c for c in calls if _method(c) == "lip_recolor"]
    first_tries = {json.dumps(c.body, sort_keys=True): c for c in limited if c.attempt == 0}
    retries = [c for c in limited if c.attempt == 1]
    assert retries and len(retries) == len(first_tries)  # each 429 was retried once, then answered
    for retry in retries:
        first = first_tries[json.dumps(retry.body, sort_keys=True)]
        assert retry.started - first.finished >= RETRY_AFTER  # waited as the server asked
    darken = [c for c in calls if _method(c) == "brow_darken"]
    failing = {json.dumps(c.body, sort_keys=True) for c in darken}
    # The pair's concept explanations ran at once; each failed 3 times (--llm_max_attempts 3),
    # and nothing after them was asked: the pair was rejected at its first level.
    assert all(c.status == 500 and "is outlined in" in c.text for c in darken)
    assert len(darken) == 3 * len(failing)
    llm = report["llm"]
    assert llm["calls"] == len(calls)
    assert llm["cost_usd"] is None  # a self-hosted model has no price in the table
    assert llm["retries"] == len(retries) + 2 * len(failing)
    assert llm["failed"] == len(failing)
    assert llm["invalid_answers"] >= 3  # iris once (then fixed), brow_thicken twice
    corrected = [c for c in calls if _method(c) == "iris_recolor" and CORRECTION in c.text]
    assert corrected and all(c.status == 200 for c in corrected)


def test_the_stage_keeps_several_calls_in_flight_within_the_bound(openai_runs):
    # Six pairs in one describe batch, --llm_concurrency 4, 50 ms a call: calls overlap,
    # and never more than four at once (describer and rater share one client per process).
    assert 2 <= openai_runs["peak"] <= 4


def test_rerun_calls_only_for_what_failed_and_writes_the_same_bytes(openai_runs):
    """Every answer, valid or not, is cached; only the requests that never got one (HTTP 500
    every time) are tried again, so a re-run after an outage picks up where it failed."""
    second = openai_runs["second_calls"]
    assert second and all(_method(c) == "brow_darken" and c.status == 500 for c in second)
    failed_before = {json.dumps(c.body, sort_keys=True) for c in openai_runs["first_calls"] if c.status == 500}
    assert {json.dumps(c.body, sort_keys=True) for c in second} == failed_before
    root = openai_runs["root"]
    report = json.loads((root / "out2" / "run_report.json").read_text())
    assert report["llm"]["calls"] == len(second) and report["llm"]["cache_misses"] == len(failed_before)
    assert report["llm"]["cache_hits"] > 0
    for split in ("train", "test", "rejected"):
        assert _files(root / "out1" / split) == _files(root / "out2" / split), split


def test_samples_carry_the_model_the_prompts_and_the_rating(openai_runs):
    from datasets import load_from_disk

    from pipelines.fifa.samples import judged_answer
    from prompts.llm_prompts import load_prompts
    from schemas.fifa import flat_samples

    out = openai_runs["root"] / "out1"
    images = list(load_from_disk(str(out / "train"))) + list(load_from_disk(str(out / "test")))
    rows = [sample for image in images for sample in flat_samples(image)]
    assert rows
    templates = {t.ref.id: t.ref.version for t in load_prompts().templates.values()}
    for row in rows:
        p = row["provenance"]
        assert p["describer"] == "openai-compatible" and p["model"] == LOCAL_MODEL
        assert p["rater"] == "openai-compatible"
        used = {t["id"]: t["version"] for t in p["prompt_templates"]}
        for template_id, version in templates.items():
            assert used[template_id] == version
        # the rating sits on the answers that are the rated texts only
        assert (row["rating"] or {}).get("overall") == (8 if judged_answer(row["task"], row["negative"]) else None)
        assert row["hallucinated_concepts"] == []
    texts = [r["conversations"][1]["value"] for r in rows if r["task"] == "i_toe"]
    assert texts and all(SEAM in t for t in texts)
    report = json.loads((out / "run_report.json").read_text())
    assert report["ratings"]["histograms"]["overall"]["8"] == len({r["pair_id"] for r in rows})
    assert report["ratings"]["histograms"]["overall"]["3"] == 1
    assert report["hallucination"]["texts_hallucinating"] >= 1 and report["hallucination"]["rate"] > 0
    # hair_recolor's texts name nothing: the image's and each concept's but the root's
    # (which is its leaves' texts) count; skin_smooth's name only the earlobe, so count too.
    hair = next(r for r in _rejected(out).values() if r["reason"] == "ungrounded")
    assert report["hallucination"]["texts_ungrounded"] >= len(hair["texts"]) - 1 >= 2


def test_no_api_key_in_any_file_or_log(openai_runs):
    assert OPENAI_KEY in openai_runs["keys_seen"]  # the key did reach the server
    written = _files(openai_runs["root"])
    assert written
    for secret in (OPENAI_KEY, GEMINI_KEY):
        for name, data in written.items():
            assert secret.encode() not in data, name
        for line in openai_runs["logs"]:
            assert secret not in line


def test_gemini_backend_sends_images_and_json_schema_and_reruns_free(good_pairs, tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    manifest = good_pairs.parent / "two.jsonl"  # image paths are relative to the manifest
    rows = [json.loads(line) for line in good_pairs.read_text().splitlines()]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows if r["method"] in ("lip_recolor", "skin_age")))
    with LocalLlmServer(responder=responder, faults=faults) as server:
        run_llm(manifest, tmp_path / "out", tmp_path / "cache", "gemini", server)
        calls = server.generation_calls()
        server.reset()
        run_llm(manifest, tmp_path / "again", tmp_path / "cache", "gemini", server)
        assert server.generation_calls() == []  # the same job again: not one call
    for split in ("train", "test", "rejected"):
        assert _files(tmp_path / "out" / split) == _files(tmp_path / "again" / split), split
    assert calls and all(c.protocol == "gemini" and c.model == "gemini-2.5-flash" for c in calls)
    assert all(c.schema is not None for c in calls)
    concept_calls = [c for c in calls if "is outlined in" in c.text]
    # Real and fake, outlined (made for this prompt: JPEG); the rating sees the stored crops.
    assert concept_calls and all(c.media_types == ("image/jpeg", "image/jpeg") for c in concept_calls)
    rating_calls = [c for c in calls if c.status == 200 and "label_accuracy" in json.dumps(c.schema)]
    assert rating_calls and all(c.media_types == ("image/png", "image/png") for c in rating_calls)
    report = json.loads((tmp_path / "out" / "run_report.json").read_text())
    assert report["adds_up"] and report["pairs_written"] == 1
    assert report["rejected"]["by_reason"] == {"low_rating": 1}
    gemini = report["llm"]["by_model"]["gemini/gemini-2.5-flash"]
    assert gemini["calls"] == len(calls) and gemini["retries"] > 0
    assert gemini["input_tokens"] == sum(c.prompt_tokens for c in calls if c.status == 200)
    assert gemini["cost_usd"] > 0


@pytest.mark.parametrize("backend", ["openai", "gemini"])
def test_batch_submit_and_collect_write_what_a_live_run_writes(backend, good_pairs, tmp_path, monkeypatch):
    """Rounds of batch jobs (concepts; parents and image; rating) through the providers'
    batch APIs, each collected into the cache, end in the same shards as calling live."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    manifest = good_pairs.parent / "batch.jsonl"
    rows = [json.loads(line) for line in good_pairs.read_text().splitlines()]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows if r["method"] in ("lip_recolor", "skin_age")))
    with LocalLlmServer(responder=responder, batch_polls_until_done=1) as server:
        run_llm(manifest, tmp_path / "live", tmp_path / "live_cache", backend, server)
        live_calls = len(server.generation_calls())
        server.reset()
        out = tmp_path / "batch"
        run_llm(manifest, out, tmp_path / "batch_cache", backend, server, "--llm_batch", "submit")
        report = json.loads((out / "run_report.json").read_text())
        assert report["status"] == "awaiting_batch" and report["pairs_pending"] == 2 and report["adds_up"]
        assert not (out / "train").exists()
        state = json.loads((out / "llm_batch" / f"{backend}-{_default_model(backend)}" / "state.json").read_text())
        assert state["jobs"] and all(job["provider_id"] for job in state["jobs"])
        for _ in range(10):
            run_llm(manifest, out, tmp_path / "batch_cache", backend, server, "--llm_batch", "collect")
            report = json.loads((out / "run_report.json").read_text())
            if report["status"] == "complete":
                break
        assert report["status"] == "complete"
        assert server.generation_calls(include_batch=False) == []  # every answer came through batch jobs
        assert len(server.generation_calls()) == live_calls
    for split in ("train", "test", "rejected"):
        assert _files(tmp_path / "live" / split) == _files(out / split), split
    batch = report["llm"]["by_model"][f"{backend}/{_default_model(backend)}"]["batch"]
    assert batch["answers"] == live_calls and batch["rounds"] == 3 and batch["failed"] == 0
    assert batch["cost_usd"] > 0


def _default_model(backend: str) -> str:
    from pipelines.llm.backends import DEFAULT_MODELS

    return DEFAULT_MODELS[backend]


def test_validate_accepts_the_output_and_checks_the_bars(openai_runs, tmp_path):
    import shutil

    from build_tools.validate import validate

    out = openai_runs["root"] / "out1"
    assert validate(out).ok, validate(out).problems
    stricter = tmp_path / "stricter"
    shutil.copytree(out, stricter)
    report = json.loads((stricter / "run_report.json").read_text())
    report["options"]["min_rating"] = 9  # as if the samples (rated 8) had been kept by a lower bar
    (stricter / "run_report.json").write_text(json.dumps(report))
    problems = validate(stricter).problems
    assert problems and all("below --min_rating 9" in p for p in problems)
