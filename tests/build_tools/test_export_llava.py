"""`facext export llava` read back the way the Face-LLaVA trainer reads its data
(`facellava/train/train.py` and the image/video processors, as `../shared/references/
faceinstruct.md` §3.3 records them): JSON lists concatenated, media under the image and
video folders, one `<image>`/`<video>` token at the start of the human turn, and a
landmark array of (68, 2) for an image or (frames of the decoded video, 68, 2) for a
video, indexed by the 8 uniform frames and divided by 256."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from build_tools.cli import main
from build_tools.export_llava import ExportError, export_llava

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def faceinstruct_run(tmp_path_factory):
    from pipelines.faceinstruct.pipeline import run
    from pipelines.faceinstruct.source_trees import build_tree

    root = tmp_path_factory.mktemp("sources")
    args = []
    for name in ("rafdb", "dfew", "disfa", "ffpp"):
        build_tree(name, root / name, seed=0)
        args += ["--source", f"{name}={root / name}"]
    out = root / "out"
    run([*args, "--output", str(out)])
    return out


def decoded_frames(path: str) -> int:
    cap = cv2.VideoCapture(path)
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def load_like_face_llava(data_paths: list[str], image_folder: str, video_folder: str) -> list[dict]:
    """What LazySupervisedDataset and its processors do with each sample, reduced to the
    checks that fail when the data is wrong."""
    data = []
    for path in data_paths:
        with open(path) as f:
            data += json.load(f)
    loaded = []
    for i, sample in enumerate(data):
        sample = dict(sample, id=i)  # the trainer overwrites ids
        human, gpt = sample["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt")
        token = "<video>" if "video" in sample else "<image>"
        assert human["value"].startswith(token + "\n") and human["value"].count("<") == 1
        assert "<image>" not in gpt["value"] and "<video>" not in gpt["value"]
        landmarks = np.load(os.path.join(video_folder if "video" in sample else image_folder,
                                         sample["landmarks_2d"]))
        if "video" in sample:
            path = os.path.join(video_folder, sample["video"])
            duration = decoded_frames(path)
            assert landmarks.shape[0] == duration  # the trainer's assert (duration_lm == duration)
            ids = np.linspace(0, duration - 1, 8, dtype=int)
            model_input = (landmarks[ids] / 256.0).reshape(8, 136)
        else:
            path = os.path.join(image_folder, sample["image"])
            Image.open(path).convert("RGB")
            model_input = (landmarks / 256.0).reshape(-1)
            assert model_input.shape[0] == 136
        assert np.isfinite(model_input).all() and -0.2 < model_input.min() and model_input.max() < 1.2
        loaded.append({"kind": token, "landmarks": model_input.shape})
    return loaded


def test_export_reads_back_as_the_face_llava_trainer_reads_it(faceinstruct_run, tmp_path, capsys):
    out = tmp_path / "llava"
    assert main(["export", "llava", str(faceinstruct_run), "--out", str(out), "--split", "all"]) == 0
    files = sorted(str(p) for p in out.glob("*.json"))
    assert {os.path.basename(f).split("_test")[0].removesuffix(".json") for f in files} == \
        {"rafdb", "dfew", "disfa", "ffpp"}
    loaded = load_like_face_llava(files, str(out), str(out))
    report = json.loads((faceinstruct_run / "run_report.json").read_text())
    assert len(loaded) == report["items_written"]
    kinds = {x["kind"] for x in loaded}
    assert kinds == {"<image>", "<video>"}
    assert {x["landmarks"] for x in loaded if x["kind"] == "<video>"} == {(8, 136)}
    printed = capsys.readouterr().out
    assert "--image_folder" in printed and "_test.json" not in printed.splitlines()[-1]


def test_export_refuses_what_it_cannot_do(faceinstruct_run, tmp_path):
    with pytest.raises(ExportError, match="no run_report"):
        export_llava(str(tmp_path), str(tmp_path / "x"))
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_llava(str(faceinstruct_run), str(target))
    assert (target / "keep.txt").read_text() == "mine"
    counts = export_llava(str(faceinstruct_run), str(target), overwrite=True)
    assert not (target / "keep.txt").exists() and sum(counts.values()) > 0
