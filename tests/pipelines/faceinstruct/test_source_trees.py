"""The fixture trees of the 13 FaceInstruct source datasets: deterministic, their media
really decode and hold exactly one face (or fail as intended), and their label files
parse with plain csv/json as the layout reference describes and agree with `Expected`."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipelines.faceinstruct.source_trees import (
    CELEBA_ATTRIBUTES,
    MORPH_HEADER,
    REJECT_REASONS,
    SOURCES,
    Expected,
    build_all,
    build_tree,
)
from pipelines.vision.faces import FaceAnalyzer, FaceRejected
from schemas.common import RejectReason

os.environ.setdefault("GLOG_minloglevel", "2")

VIDEO_EXT = (".mp4", ".avi", ".flv")


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("trees")
    return root, build_all(root, seed=0)


@pytest.fixture(scope="module")
def fa():
    with FaceAnalyzer() as analyzer:
        yield analyzer


def items(built, **match) -> list[tuple[str, Expected]]:
    _, expected = built
    return [(name, e) for name, es in expected.items() for e in es
            if all(getattr(e, k) == v for k, v in match.items())]


def read_rgb(path: Path) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else np.ascontiguousarray(bgr[..., ::-1])


def video_frames(path: Path) -> list[np.ndarray]:
    """Decoded RGB frames of a video file, or of a frame folder (names sorted)."""
    if path.is_dir():
        return [read_rgb(p) for p in sorted(path.iterdir())]
    cap = cv2.VideoCapture(str(path))
    frames = []
    while cap.isOpened():
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[..., ::-1]))
    cap.release()
    return frames


def face_reason(fa, rgb) -> RejectReason | None:
    try:
        fa.the_face(rgb)
    except FaceRejected as exc:
        return exc.reason
    return None


# -- API and content rules -------------------------------------------------------------


def test_sources_and_item_counts(built):
    root, expected = built
    assert SOURCES == ("dfew", "mafw", "ferv39k", "crema_d", "affectnet", "rafdb", "disfa", "bp4d",
                       "celeba", "morph", "utkface", "ffpp", "fakeavceleb")
    assert list(expected) == list(SOURCES)
    for name, es in expected.items():
        assert (root / name).is_dir()
        good = [e for e in es if e.reject is None]
        bad = [e for e in es if e.reject is not None]
        assert bad, f"{name} has no bad item"
        assert 4 <= len(good) <= (30 if name == "disfa" else 8), (name, len(good))
        for e in es:
            assert e.task in {"expression", "au", "attribute", "age", "deepfake"}
            assert e.media_type in {"image", "video"}
            assert e.split in {None, "train", "test"}
            assert (e.label is None) == (e.reject is not None)
            assert e.reject is None or e.reject in REJECT_REASONS
            assert (e.source_frame is not None) == (name == "disfa")
            assert not e.source_path.startswith("/") and "\\" not in e.source_path
        assert len({(e.source_path, e.source_frame) for e in es}) == len(es), f"{name}: duplicate items"
    kinds = Counter(e.reject for _, e in items(built) if e.reject)
    assert set(kinds) == set(REJECT_REASONS)
    # A truncated image and a corrupt video both exist among the decode errors.
    decode = [e for _, e in items(built, reject="decode_error")]
    assert any(e.media_type == "image" for e in decode) and any(e.media_type == "video" for e in decode)


def test_labels_follow_the_spec(built):
    for name, e in items(built, reject=None):
        if e.task == "au":
            assert e.label["aus"] == sorted(e.label["aus"]) and e.label["aus"]
        elif e.task == "attribute":
            order = [CELEBA_ATTRIBUTES.index(a) for a in e.label["attributes"]]
            assert order == sorted(order)
        elif e.task == "age":
            assert isinstance(e.label["age"], int)
        elif e.task == "deepfake":
            assert (e.label["method"] is None) == (not e.label["fake"])
    splits = {name: {e.split for e in es} for name, es in built[1].items()}
    for name in ("crema_d", "disfa", "bp4d", "morph", "utkface", "fakeavceleb"):
        assert splits[name] == {None}, name
    for name in ("dfew", "mafw", "ferv39k", "affectnet", "rafdb", "celeba", "ffpp"):
        assert splits[name] == {"train", "test"}, name


def test_rebuild_is_byte_identical_per_seed(built, tmp_path):
    root, expected = built
    again = build_all(tmp_path / "again", seed=0)
    assert tree_digest(tmp_path / "again") == tree_digest(root)
    assert again == expected
    other = tmp_path / "other"
    build_tree("utkface", other, seed=1)
    assert tree_digest(other) != tree_digest(root / "utkface")


def test_total_size_is_small(built):
    root, _ = built
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 10_000_000


def test_bad_false_writes_only_good_items(built, tmp_path):
    root, full = built
    expected = build_all(tmp_path, seed=0, bad=False)
    for name, es in expected.items():
        assert es and all(e.reject is None for e in es), name
        for e in es:
            assert (tmp_path / name / e.source_path).exists(), e
        # The good items (and their media) do not depend on `bad`; only DISFA's SN010 gains
        # the two frames that show no face when bad items are written.
        good = [e for e in full[name] if e.reject is None]
        assert all(e in es for e in good), name
        assert len(es) - len(good) == (2 if name == "disfa" else 0), name
        for e in good:
            path = tmp_path / name / e.source_path
            if path.is_file() and name != "disfa":
                assert path.read_bytes() == (root / name / e.source_path).read_bytes(), e


def test_good_media_exist_and_missing_files_do_not(built):
    root, _ = built
    for name, e in items(built):
        path = root / name / e.source_path
        if e.reject == "missing_file":
            assert not path.exists(), e
        else:
            assert path.exists(), e
            if path.is_dir():
                assert any(path.iterdir()), e


# -- faces in images -------------------------------------------------------------------


def test_good_images_have_exactly_one_face(built, fa):
    root, _ = built
    for name, e in items(built, media_type="image", reject=None):
        if name == "disfa":
            continue  # frames of a video: below
        path = root / name / e.source_path
        with Image.open(path) as im:
            im.load()  # Pillow decodes the whole file too
        assert face_reason(fa, read_rgb(path)) is None, e


def test_bad_images_fail_as_intended(built, fa):
    root, _ = built
    bad = [(n, e) for n, e in items(built, media_type="image") if e.reject and n != "disfa"]
    assert bad
    for name, e in bad:
        path = root / name / e.source_path
        if e.reject == "decode_error":
            assert cv2.imread(str(path)) is None, e
            with pytest.raises(OSError), Image.open(path) as im:
                im.load()
        elif e.reject == "no_face":
            assert fa.detect(read_rgb(path)) == [], e
        elif e.reject == "multiple_faces":
            strong = [d for d in fa.detect(read_rgb(path)) if d.score >= 0.7]
            assert len(strong) == 2, e
            assert face_reason(fa, read_rgb(path)) == RejectReason.MULTIPLE_FACES
        elif e.reject == "unknown_label":
            assert face_reason(fa, read_rgb(path)) is None, e  # only the label is wrong


def test_disfa_frames(built, fa):
    root, expected = built
    by_video: dict[str, list[Expected]] = {}
    for e in expected["disfa"]:
        by_video.setdefault(e.source_path, []).append(e)
    for rel, es in by_video.items():
        path = root / "disfa" / rel
        if es[0].reject == "missing_file":
            assert not path.exists()
            continue
        cap = cv2.VideoCapture(str(path))
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(20.0)
        cap.release()
        frames = video_frames(path)
        assert len(frames) == len(es) == max(e.source_frame for e in es) + 1
        for e in es:
            reason = face_reason(fa, frames[e.source_frame])
            assert reason == (RejectReason.NO_FACE if e.reject == "no_face" else None), e


# -- videos ----------------------------------------------------------------------------


def no_face_share(fa, frames) -> float:
    return sum(face_reason(fa, f) is not None for f in frames) / len(frames)


def test_videos_decode_and_hold_a_face(built, fa):
    root, _ = built
    videos = [(n, e) for n, e in items(built, media_type="video") if e.reject != "missing_file"]
    assert videos
    for name, e in videos:
        path = root / name / e.source_path
        frames = video_frames(path)
        if e.reject == "decode_error":
            assert frames == [], e
            continue
        assert 12 <= len(frames) <= 32 and all(f is not None for f in frames), e
        h, w = frames[0].shape[:2]
        assert 160 <= max(w, h) <= 256, e
        share = no_face_share(fa, frames)
        if e.reject == "too_many_failed_frames":
            assert share > 0.3, (e, share)
        else:
            assert share < 0.1, (e, share)
    # Frame counts and rates of the files as written.
    for rel in ("mafw/data/clips/00025.mp4", "crema_d/VideoFlash/1001_DFA_ANG_XX.flv",
                "ffpp/original_sequences/youtube/c40/videos/071.mp4"):
        cap = cv2.VideoCapture(str(root / rel))
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
        cap.release()
        assert len(video_frames(root / rel)) == 16


# -- label files, parsed as the reference describes -----------------------------------


def expected_map(built, name) -> dict[str, Expected]:
    return {e.source_path: e for e in built[1][name]}


def test_dfew_split_csvs(built):
    root, _ = built
    exp = expected_map(built, "dfew")
    test_count: Counter = Counter()
    for k in range(1, 6):
        seen = {}
        for split in ("train", "test"):
            with open(root / f"dfew/EmoLabel_DataSplit/{split}(single-labeled)/set_{k}.csv", newline="") as f:
                reader = csv.DictReader(f)
                assert reader.fieldnames == ["video_name", "label"]
                for row in reader:
                    assert row["video_name"] == str(int(row["video_name"]))  # not zero-padded
                    folder = f"Clip/clip_224x224/{int(row['video_name']):05d}"
                    seen[folder] = (split, int(row["label"]))
                    test_count[folder] += split == "test"
        assert set(seen) == set(exp)  # each clip in one list per fold
        if k == 1:
            for folder, (split, label) in seen.items():
                assert exp[folder].split == split
                if exp[folder].reject is None:
                    assert 1 <= label <= 7
    assert set(test_count.values()) == {1}
    assert exp["Clip/clip_224x224/01500"].reject == "unknown_label"
    frame = root / "dfew/Clip/clip_224x224/00003/00003_00001.jpg"
    assert frame.is_file() and cv2.imread(str(frame)).shape == (224, 224, 3)
    assert (root / "dfew/Clip/clip_224x224/00099").is_dir() and "Clip/clip_224x224/00099" not in exp


def test_mafw_split_txts(built):
    root, _ = built
    exp = expected_map(built, "mafw")
    words = {"anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise", "contempt",
             "anxiety", "helplessness", "disappointment"}
    in_test: Counter = Counter()
    for k in range(1, 6):
        for split in ("train", "test"):
            with open(root / f"mafw/Train & Test Set/single/no_caption/set_{k}/{split}.txt", newline="") as f:
                for clip, word in csv.reader(f, delimiter=" "):
                    assert re.fullmatch(r"\d{5}\.mp4", clip) and word in words
                    e = exp[f"data/clips/{clip}"]
                    in_test[clip] += split == "test"
                    if k == 1:
                        assert e.split == split
                    if e.reject is None:
                        assert e.label == {"expression": word}
    assert len(in_test) == len(exp) and set(in_test.values()) == {1}
    assert (root / "mafw/data/clips/08888.mp4").exists() and "data/clips/08888.mp4" not in exp


def test_ferv39k_split_files(built):
    root, _ = built
    exp = expected_map(built, "ferv39k")
    seen = set()
    for split in ("train", "test"):
        with open(root / f"ferv39k/4_setups/All_scenes/{split}_All.csv", newline="") as f:
            for clip, emo in csv.reader(f, delimiter=" "):  # no header
                _scene, folder_emo, num = clip.split("/")
                assert folder_emo == emo and re.fullmatch(r"\d{4}", num)
                e = exp[f"2_ClipsforFaceCrop/{clip}"]
                assert e.split == split
                assert e.reject is not None or e.label == {"expression": emo}
                seen.add(e.source_path)
    assert seen == set(exp)


def test_crema_d_names(built):
    root, _ = built
    exp = expected_map(built, "crema_d")
    with open(root / "crema_d/SentenceFilenames.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {f"VideoFlash/{r['Filename']}.flv" for r in rows} == set(exp)
    names = {"ANG": "Anger", "DIS": "Disgust", "FEA": "Fear", "HAP": "Happy", "NEU": "Neutral", "SAD": "Sad"}
    for rel, e in exp.items():
        actor, _sentence, emo, level = Path(rel).stem.split("_")
        assert e.subject_id == actor and 1001 <= int(actor) <= 1091 and level in {"LO", "MD", "HI", "XX"}
        assert e.reject is not None or e.label == {"expression": names[emo]}
    with open(root / "crema_d/VideoDemographics.csv", newline="") as f:
        assert next(csv.reader(f)) == ["ActorID", "Age", "Sex", "Race", "Ethnicity"]


def test_affectnet_csvs(built):
    root, _ = built
    exp = expected_map(built, "affectnet")
    header = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
              "expression", "valence", "arousal"]
    names = ["Neutral", "Happiness", "Sadness", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]
    seen = set()
    for listing, split in (("training", "train"), ("validation", "test")):
        with open(root / f"affectnet/Manually_Annotated_file_lists/{listing}.csv", newline="") as f:
            reader = csv.DictReader(f)
            assert reader.fieldnames == header
            for row in reader:
                e = exp[f"Manually_Annotated/Manually_Annotated_Images/{row['subDirectory_filePath']}"]
                assert e.split == split and len(row["facial_landmarks"].split(";")) == 136
                code = int(row["expression"])
                if code >= 8:
                    assert e.reject == "unknown_label" and float(row["valence"]) == -2
                elif e.reject is None:
                    assert e.label == {"expression": names[code]} and -1 <= float(row["valence"]) <= 1
                seen.add(e.source_path)
    assert seen == set(exp)


def test_rafdb_label_file(built):
    root, _ = built
    exp = expected_map(built, "rafdb")
    names = {1: "Surprise", 2: "Fear", 3: "Disgust", 4: "Happiness", 5: "Sadness", 6: "Anger", 7: "Neutral"}
    with open(root / "rafdb/EmoLabel/list_patition_label.txt", newline="") as f:
        rows = list(csv.reader(f, delimiter=" "))
    assert {f"Image/original/{n}" for n, _ in rows} == set(exp)
    for name, label in rows:
        assert re.fullmatch(r"train_\d{5}\.jpg|test_\d{4}\.jpg", name)
        e = exp[f"Image/original/{name}"]
        assert e.split == name.split("_")[0]
        assert e.reject is not None or e.label == {"expression": names[int(label)]}
    assert (root / "rafdb/Image/original/train_00010.jpg").exists()


def test_disfa_label_files(built):
    root, expected = built
    aus = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
    for sn in sorted({e.subject_id for e in expected["disfa"]}):
        inten = {}
        for au in aus:
            with open(root / f"disfa/ActionUnit_Labels/{sn}/{sn}_au{au}.txt", newline="") as f:
                rows = [(int(a), int(b)) for a, b in csv.reader(f)]
            assert [r[0] for r in rows] == list(range(1, len(rows) + 1))  # 1-based, no header
            inten[au] = [b for _, b in rows]
        for e in expected["disfa"]:
            if e.subject_id == sn and e.reject is None:
                assert e.label == {"aus": [au for au in aus if inten[au][e.source_frame] >= 2]}
                assert e.source_path == f"Videos_LeftCamera/LeftVideo{sn}_comp.avi"


def test_bp4d_au_occ(built):
    root, _ = built
    exp = expected_map(built, "bp4d")
    seen = set()
    for path in sorted((root / "bp4d/AUCoding/AU_OCC").glob("*.csv")):
        subj, task = path.stem.split("_")
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            assert reader.fieldnames[0] == "0"
            for row in reader:
                assert set(row.values()) - {row["0"]} <= {"0", "1", "9"}
                assert all(row[c] == "9" for c in reader.fieldnames if int(c) >= 40)
                e = exp[f"BP4D-training/{subj}/{task}/{row['0']}.jpg"]
                assert e.subject_id == subj
                if e.reject is None:
                    assert e.label == {"aus": [int(c) for c in reader.fieldnames[1:] if row[c] == "1"]}
                seen.add(e.source_path)
    assert seen == set(exp)


def test_celeba_text_files(built):
    root, _ = built
    exp = expected_map(built, "celeba")
    lines = (root / "celeba/Anno/list_attr_celeba.txt").read_text().split("\n")
    assert lines[-1] == ""
    count, names, rows = int(lines[0]), lines[1], lines[2:-1]
    assert names.endswith(" ") and tuple(names.split()) == CELEBA_ATTRIBUTES
    assert count == len(rows) == len(exp)
    for line in rows:
        assert re.fullmatch(r"\d{6}\.jpg( (-1| 1)){40}", line)
        name, *values = line.split()
        e = exp[f"Img/img_align_celeba/{name}"]
        if e.reject is None:
            assert e.label == {"attributes": [a for a, v in zip(names.split(), values) if v == "1"]}
    with open(root / "celeba/Eval/list_eval_partition.txt", newline="") as f:
        for name, part in csv.reader(f, delimiter=" "):
            assert exp[f"Img/img_align_celeba/{name}"].split == ("train" if part == "0" else "test")
    assert cv2.imread(str(root / "celeba/Img/img_align_celeba/000001.jpg")).shape == (218, 178, 3)


def test_morph_csv(built):
    root, _ = built
    exp = expected_map(built, "morph")
    with open(root / "morph/morph_2008_nonCommercial.csv", newline="") as f:
        assert f.readline().rstrip("\n") == MORPH_HEADER
        f.seek(0)
        reader = csv.reader(f, skipinitialspace=True)
        header = next(reader)
        assert header[7] == "age" and header[10] == "photo"
        rows = list(reader)
    assert {r[10] for r in rows} == set(exp)
    for r in rows:
        e = exp[r[10]]
        assert e.subject_id == r[0] and r[4] in "WBAHO" and r[5] in "MF"
        assert re.fullmatch(r"Album2/\d+_\d{2}[MF]\d+\.JPG", r[10])
        assert e.reject is not None or e.label == {"age": int(r[7])}


def test_utkface_names(built):
    _, expected = built
    for e in expected["utkface"]:
        name = Path(e.source_path).name
        assert e.source_path.startswith("UTKFace/") and name.endswith(".jpg.chip.jpg")
        assert e.reject is not None or e.label == {"age": int(name.split("_")[0])}
    assert any(len(Path(e.source_path).name.split("_")) == 3 for e in expected["utkface"])


def test_ffpp_splits_and_folders(built):
    root, _ = built
    exp = expected_map(built, "ffpp")
    split_of = {}
    for name, split in (("train", "train"), ("val", "test"), ("test", "test")):
        pairs = json.loads((root / f"ffpp/splits/{name}.json").read_text())
        for pair in pairs:
            assert len(pair) == 2 and all(re.fullmatch(r"\d{3}", v) for v in pair)
            split_of.update({v: split for v in pair})
    methods = {"Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"}
    for rel, e in exp.items():
        parts = rel.split("/")
        stem = Path(rel).stem
        assert e.split == split_of[stem.split("_")[0]] and e.subject_id == stem.split("_")[0]
        if parts[0] == "original_sequences":
            assert parts[1:4] == ["youtube", "c40", "videos"]
            assert e.reject is not None or e.label == {"fake": False, "method": None}
        else:
            assert parts[1] in methods and parts[2:4] == ["c40", "videos"]
            assert e.reject is not None or e.label == {"fake": True, "method": parts[1]}
    assert (root / "ffpp/manipulated_sequences/Deepfakes/masks/videos/071_054.mp4").exists()


def test_fakeavceleb_meta(built):
    root, _ = built
    exp = expected_map(built, "fakeavceleb")
    with open(root / "fakeavceleb/FakeAVCeleb/meta_data.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        assert header == ["source", "target1", "target2", "method", "category", "type", "race", "gender",
                          "path", ""]
        rows = [dict(zip(header[:9] + ["Unnamed: 9"], r)) for r in reader]
    assert {f"{r['Unnamed: 9']}/{r['path']}" for r in rows} == set(exp)
    for r in rows:
        e = exp[f"{r['Unnamed: 9']}/{r['path']}"]
        assert r["Unnamed: 9"].startswith(f"FakeAVCeleb/{r['type']}/{r['race']}/{r['gender']}/")
        assert e.subject_id == r["source"] and r["category"] in "ACD"
        if e.reject is None:
            fake = r["type"].startswith("FakeVideo")
            assert e.label == {"fake": fake, "method": r["method"] if fake else None}
