"""The FaceInstruct pipeline's own options, declared once: their flags, the defaults of
`FaceInstructSettings` and the README's option table all come from `FaceInstructFlags`.

The run options (`--limit`, `--overwrite`, `--config`, ...) and those of the describe and
rate stages are shared (`pipelines.common.run_options`, `pipelines.common.llm_options`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.common.options import option
from schemas.faceinstruct import SOURCES

SOURCE_HELP = (f"a labelled dataset as NAME=PATH, PATH its root as unpacked; repeat for several; NAME one of "
               f"{', '.join(SOURCES)}")


@dataclass(frozen=True)
class FaceInstructFlags:
    source: list[str] | None = option(None, SOURCE_HELP, repeat=True,  # noqa: RUF009 - `option` makes a field
                                      shown="the bundled sample (with no --input either)")
    input: str | None = option(None, "manifest of labelled media (JSONL, CSV or Parquet; columns media, task, "
                                     "label, and optionally subject_id, split, source_dataset, source_frame): "
                                     "path, glob or URL", shown="none")
    output: str = option("out/faceinstruct", "output folder or URL")
    crop_size: int = option(256, "side of the square face crop, px (Face-LLaVA: 256)")
    crop_margin: float = option(0.0, "the face detector's box grown by this fraction of its side on every side "
                                     "(Face-LLaVA: 0)")
    min_face_px: int = option(48, "faces smaller than this (shorter side of the detector's box, source px) are "
                                  "rejected face_too_small")
    fps: float = option(24.0, "frame rate of the crop track of a video (Face-LLaVA: 24)")
    frames: int = option(8, "crop frames sampled uniformly from a video's track for its sample (Face-LLaVA: 8)")
    max_failed_frames: float = option(0.3, "a video with a larger share of frames without exactly one usable "
                                           "face is rejected too_many_failed_frames")
    image_format: str = option("jpeg", "encoding of the stored crops", choices=("jpeg", "png"))
    fold: int = option(1, "DFEW and MAFW: the official 5-fold split whose train/test lists give the split",
                       choices=(1, 2, 3, 4, 5))
    ffpp_compression: str = option("c40", "FaceForensics++: the compression read (FaceInstruct uses the "
                                          "low-quality c40)", choices=("raw", "c23", "c40"))
    frame_step: int = option(1, "DISFA and BP4D: keep every n-th labelled frame")
    disfa_camera: str = option("left", "DISFA: the camera whose video is read", choices=("left", "right"))
    max_rows_per_shard: int = option(1000, "rows per Arrow file, at most")
    test_fraction: float = option(0.1, "share of identities (subject, else item) in the test split, for "
                                       "datasets without an official split")
    seed: int = option(0, "varies the instruction paired with each description")
    allow_absolute_paths: bool = option(False, "let manifest rows name absolute paths, URLs or paths outside "
                                               "its folder")
