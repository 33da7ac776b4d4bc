"""FaceInstruct with model-written descriptions and ratings: the real openai and
google-genai clients against a local server that speaks their protocols.  One item's
description gives the label away (rejected `label_leak`), one is rated 3 (`low_rating`);
a video goes to Gemini as a video and to OpenAI as its 8 sampled frames; a re-run from
the cache makes no call and writes the same bytes."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from build_tools.fakes.face_model import describe, face_responder, prompt_label
from build_tools.fakes.llm_server import LocalLlmServer
from schemas.faceinstruct import EMOTION_OF

pytestmark = pytest.mark.slow

OPENAI_KEY = f"sk-facext-test-{uuid.uuid4().hex}"
GEMINI_KEY = f"AIza-facext-test-{uuid.uuid4().hex}"
LEAKS = "disgust"  # the description of the item with this label says it was labelled
RATED_LOW = "fear"  # the rater gives the item with this label 3


def responder(call):
    answer = face_responder(call)
    found = prompt_label(call.text)
    if found and LEAKS in found[1]:
        return {"description": f"The video was labelled as {LEAKS}, and the frowning mouth agrees."}
    if "overall" in answer and RATED_LOW in call.text:
        return {**answer, "overall": 3, "label_accuracy": 3, "reason": "the face does not show fear"}
    return answer


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    from pipelines.faceinstruct.source_trees import build_tree

    root = tmp_path_factory.mktemp("llm_sources")
    build_tree("dfew", root / "dfew", seed=0, bad=False)
    return root


def run(root, out, cache, backend, server, *extra):
    from pipelines.faceinstruct.pipeline import run as run_pipeline

    url = server.openai_base_url if backend.startswith("openai") else server.url
    model = ("--llm_model", "qwen2.5-vl-7b-instruct") if backend == "openai-compatible" else ()
    return run_pipeline(["--source", f"dfew={root / 'dfew'}", "--output", str(out), "--describer", backend,
                         "--rater", backend, "--llm_base_url", url, "--llm_cache", str(cache),
                         "--llm_max_attempts", "2", "--llm_backoff_s", "0.01", *model, *extra])


def _labels(root) -> dict:
    from pipelines.faceinstruct.readers import read_source

    return {item.source_path: item.label["expression"] for item in read_source("dfew", str(root / "dfew"))}


@pytest.mark.parametrize("backend", ["openai-compatible", "gemini"])
def test_model_descriptions_ratings_and_their_rejections(sources, tmp_path, monkeypatch, backend):
    from datasets import load_from_disk

    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    labels = _labels(sources)
    assert {"Disgust", "Fear"} <= set(labels.values()), "the tree holds the labels this test bends"
    with LocalLlmServer(responder=responder) as server:
        run(sources, tmp_path / "out", tmp_path / "cache", backend, server)
        calls = server.generation_calls()
        server.reset()
        run(sources, tmp_path / "again", tmp_path / "cache", backend, server)
        assert server.generation_calls() == []
    rejected = {x["source_path"]: x for x in load_from_disk(str(tmp_path / "out" / "rejected"))}
    samples = {x["source_path"]: x for s in load_from_disk(str(tmp_path / "out")).values() for x in s}
    assert set(rejected) | set(samples) == set(labels)
    for path, label in labels.items():
        if label == "Disgust":
            assert rejected[path]["reason"] == "label_leak" and "labelled" in rejected[path]["description"]
        elif label == "Fear":
            assert rejected[path]["reason"] == "low_rating" and rejected[path]["rating"]["overall"] == 3
        else:
            sample = samples[path]
            # the model was told the emotion (`Happy` as happiness) and described it
            assert sample["conversations"][1]["value"] == describe("expression", EMOTION_OF[label.lower()])
            assert sample["provenance"]["describer"] == backend and sample["rating"]["overall"] == 8
    describe_calls = [c for c in calls if "Explain why the expression" in c.text]
    assert len(describe_calls) == len(labels)
    if backend == "gemini":
        for call in describe_calls:
            parts = [p for content in call.body["contents"] for p in content.get("parts", [])
                     if "inlineData" in p or "inline_data" in p]
            inline = [p.get("inlineData") or p.get("inline_data") for p in parts]
            assert [d.get("mimeType") or d.get("mime_type") for d in inline] == ["video/mp4"]
            data = inline[0]["data"]
            assert base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))[4:8] == b"ftyp"  # an mp4
    else:
        assert all(c.images == 8 for c in describe_calls)
    for split in ("train", "test", "rejected"):
        first = sorted(p.read_bytes() for p in (tmp_path / "out" / split).rglob("*.arrow"))
        again = sorted(p.read_bytes() for p in (tmp_path / "again" / split).rglob("*.arrow"))
        assert first == again, split
    report = json.loads((tmp_path / "out" / "run_report.json").read_text())
    assert report["adds_up"] and report["rejected"]["by_reason"] == {"label_leak": 1, "low_rating": 1}
    for name in ("out", "again"):
        for path in (tmp_path / name).rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert OPENAI_KEY.encode() not in data and GEMINI_KEY.encode() not in data


@pytest.mark.parametrize("backend", ["openai", "gemini"])
def test_batch_submit_and_collect_write_what_a_live_run_writes(sources, tmp_path, monkeypatch, backend):
    """The descriptions, then the ratings, through the providers' batch APIs (each round
    collected into the cache) end in the same shards as calling live."""
    from pipelines.llm.backends import DEFAULT_MODELS

    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    with LocalLlmServer(responder=responder, batch_polls_until_done=1) as server:
        run(sources, tmp_path / "live", tmp_path / "live_cache", backend, server)
        live_calls = len(server.generation_calls())
        server.reset()
        out = tmp_path / "batch"
        run(sources, out, tmp_path / "batch_cache", backend, server, "--llm_batch", "submit")
        report = json.loads((out / "run_report.json").read_text())
        assert report["status"] == "awaiting_batch" and report["items_pending"] > 0 and report["adds_up"]
        assert not (out / "train").exists()
        for _ in range(6):
            run(sources, out, tmp_path / "batch_cache", backend, server, "--llm_batch", "collect")
            report = json.loads((out / "run_report.json").read_text())
            if report["status"] == "complete":
                break
        assert report["status"] == "complete"
        assert server.generation_calls(include_batch=False) == []  # every answer came through batch jobs
        assert len(server.generation_calls()) == live_calls
    for split in ("train", "test", "rejected"):
        live = sorted(p.read_bytes() for p in (tmp_path / "live" / split).rglob("*.arrow"))
        batch = sorted(p.read_bytes() for p in (out / split).rglob("*.arrow"))
        assert live == batch, split
    entry = report["llm"]["by_model"][f"{backend}/{DEFAULT_MODELS[backend]}"]["batch"]
    assert entry["answers"] == live_calls and entry["rounds"] == 2 and entry["failed"] == 0
