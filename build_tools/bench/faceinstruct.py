"""`facext bench faceinstruct`: how fast the FaceInstruct pipeline turns images and videos
into samples, against the face-model floor measured in the same run.

Inputs: the fixture trees of the source datasets (`pipelines.faceinstruct.source_trees`,
good items only), images from the image datasets and videos from the video datasets,
each built `--copies` times with different seeds.

* Floor, per image: decode, face detection and the 478-point mesh (what any landmark
  pipeline pays).  Per video: decode every frame and detect the face in it, and run the
  mesh on every frame of the 24 fps track.
* Pipeline: `beam run pipelines/faceinstruct_build.py` (in-process FnApiRunner, offline
  describer and rater, an empty analysis cache) on the images, then on the videos, read
  from a manifest of the trees' items.  Steady state: after a warm-up run, the whole run
  minus a run of its first quarter, so no one-time cost (models, runner) is counted.

Reported per core: images/s and video-seconds/s (seconds of source video per second of
run), each with its floor and the ratio pipeline / floor.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

IMAGE_SOURCES = ("rafdb", "celeba", "utkface", "morph", "affectnet")
VIDEO_SOURCES = ("dfew", "ferv39k", "crema_d", "ffpp", "fakeavceleb")


def _trees(root: Path, names: tuple[str, ...], copies: int) -> list[tuple[str, Path]]:
    from pipelines.faceinstruct.source_trees import build_tree

    out = []
    for copy in range(copies):
        for name in names:
            folder = root / f"{name}-{copy}"
            build_tree(name, folder, seed=copy, bad=False)
            out.append((name, folder))
    return out


def _items(trees) -> list:
    from pipelines.faceinstruct.readers import read_source
    from schemas.faceinstruct import FaceItem

    return [x for name, root in trees for x in read_source(name, str(root)) if isinstance(x, FaceItem)]


def floor_seconds(items: list, fps: float = 24.0) -> dict:
    """Seconds the face models and decoding alone take over the items, in one pass: per
    image decode, detect, mesh; per video decode and detect every frame, and run the mesh
    on the frames a `fps` track keeps."""
    from pipelines.faceinstruct.media import square_box
    from pipelines.vision.faces import Detection, FaceAnalyzer, FaceRejected
    from pipelines.vision.images import read_image
    from pipelines.vision.video import open_video, resample_indices

    def face(fa, rgb):
        try:
            fa.mesh(rgb, Detection(square_box(fa.the_face(rgb), 0.0), 1.0))
        except FaceRejected:
            pass

    with FaceAnalyzer() as fa:
        first = items[0]
        face(fa, read_image(first.media) if first.media_type == "image" else
             next(open_video(first.media).frames())[1])  # both models loaded and warm
        start = time.perf_counter()
        video_s = 0.0
        for item in items:
            if item.media_type == "image":
                face(fa, read_image(item.media))
                continue
            with open_video(item.media) as source:
                claimed = source.frame_count or 0
                track = set(resample_indices(claimed, source.fps, fps))
                n = 0
                for index, frame in source.frames():
                    n += 1
                    if index in track:
                        face(fa, frame)
                    else:
                        try:
                            fa.the_face(frame)
                        except FaceRejected:
                            pass
                video_s += n / source.fps
        return {"seconds": time.perf_counter() - start, "video_seconds": video_s}


def _manifest(items: list, path: Path) -> Path:
    """The items as a generic manifest (the same dataset may appear in several copies, which
    `--source` takes once each)."""
    with path.open("w") as f:
        for item in items:
            row = {"media": item.media, "task": item.task, "label": item.label, "split": item.split,
                   "subject_id": item.subject_id, "source_dataset": item.source_dataset,
                   "source_frame": item.source_frame}
            f.write(json.dumps(row) + "\n")
    return path


def _run(manifest: Path, out: Path, limit: int | None = None) -> tuple[float, dict]:
    """Wall seconds of one pipeline run (its own empty analysis cache) and its report."""
    from pipelines.faceinstruct.pipeline import run

    args = ["--input", str(manifest), "--allow_absolute_paths", "--output", str(out), "--overwrite",
            "--analysis_cache", str(out.parent / f"{out.name}_cache")]
    start = time.perf_counter()
    run(args + (["--limit", str(limit)] if limit else []))
    wall = time.perf_counter() - start
    return wall, json.loads((out / "run_report.json").read_text())


def steady_seconds(manifest: Path, n: int, root: Path, name: str) -> tuple[float, dict]:
    """Seconds a run spends on `n` items at steady state: the whole run minus a run of the
    first quarter, scaled back to n (both after a warm-up run, so neither pays the one-time
    start: the face models, Beam's runner); and the whole run's report."""
    _run(manifest, root / f"{name}_warm", limit=1)
    part = max(1, n // 4)
    wall_part, _ = _run(manifest, root / f"{name}_part", limit=part)
    wall_all, report = _run(manifest, root / f"{name}_all")
    per_item = max(wall_all - wall_part, 1e-9) / max(1, n - part)
    return per_item * n, {**report, "wall_s": wall_all, "fixed_s": wall_part - per_item * part}


def bench_faceinstruct(copies: int = 4) -> dict:
    import os

    os.environ.setdefault("FACEXT_PROGRESS", "0")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images, videos = _trees(root / "img", IMAGE_SOURCES, copies), _trees(root / "vid", VIDEO_SOURCES, copies)
        image_items, video_items = _items(images), _items(videos)
        floor_images = floor_seconds(image_items)
        floor_videos = floor_seconds(video_items)
        image_manifest = _manifest(image_items, root / "images.jsonl")
        video_manifest = _manifest(video_items, root / "videos.jsonl")
        run_images, report_images = steady_seconds(image_manifest, len(image_items), root, "images")
        run_videos, report_videos = steady_seconds(video_manifest, len(video_items), root, "videos")
    n_images, video_seconds = len(image_items), floor_videos["video_seconds"]
    # The videos' quarter run holds the first quarter of the items; the clips are alike
    # in length, so the slope per item stands for the slope per video-second.
    return {
        "copies": copies, "images": n_images, "videos": len(video_items),
        "video_seconds": round(video_seconds, 3),
        "written": {"images": report_images["items_written"], "videos": report_videos["items_written"]},
        "fixed_s": {"images": round(report_images["fixed_s"], 3), "videos": round(report_videos["fixed_s"], 3)},
        "images_per_s_per_core": round(n_images / run_images, 3),
        "images_per_s_floor": round(n_images / floor_images["seconds"], 3),
        "image_ratio_to_floor": round(run_images / floor_images["seconds"], 3),
        "video_seconds_per_s_per_core": round(video_seconds / run_videos, 3),
        "video_seconds_per_s_floor": round(video_seconds / floor_videos["seconds"], 3),
        "video_ratio_to_floor": round(run_videos / floor_videos["seconds"], 3),
        "wall_s": {"images": round(report_images["wall_s"], 3), "videos": round(report_videos["wall_s"], 3)},
        "floor_s": {"images": round(floor_images["seconds"], 3), "videos": round(floor_videos["seconds"], 3)},
    }


def summary(report: dict) -> str:
    head = (f"{report['images']} images, {report['videos']} videos ({report['video_seconds']:.1f} s of video); "
            f"steady state (a run minus its first quarter, after a warm-up run)")
    images = (f"  images: {report['images_per_s_per_core']:.2f}/s per core, floor "
              f"{report['images_per_s_floor']:.2f}/s: pipeline / floor = {report['image_ratio_to_floor']:.2f}")
    video = (f"  video: {report['video_seconds_per_s_per_core']:.2f} video-s/s per core, floor "
             f"{report['video_seconds_per_s_floor']:.2f}: pipeline / floor = {report['video_ratio_to_floor']:.2f}")
    return f"{head}\n{images}\n{video}"
