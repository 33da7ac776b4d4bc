"""`facext analyze REAL FAKE --out DIR`: one pair, its record and its pictures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from pipelines.fifa.analysis import AnalysisConfig, PairAnalyzer
from pipelines.fifa.artifacts import mask_config
from pipelines.vision.faces import FaceGeometryConfig
from schemas.analysis import PairAnalysis


def analysis_config(mask_mode: str | None = None, threshold: float | None = None,
                    percentile: float | None = None, crop_size: int | None = None) -> AnalysisConfig:
    """Defaults, with the given options replaced (a percentile alone means percentile mode)."""
    config = AnalysisConfig()
    mode = mask_mode or ("percentile" if percentile is not None else config.mask.mode)
    face = FaceGeometryConfig(crop_size=crop_size) if crop_size else config.face
    return dataclasses.replace(config, mask=mask_config(mode, threshold, percentile), face=face)


def analyze_to_dir(real: str | Path, fake: str | Path, out: str | Path, **options) -> PairAnalysis:
    from build_tools.render import render_pair_overlay, save_label_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with PairAnalyzer(analysis_config(**options)) as analyzer:
        result = analyzer.analyze_files(real, fake)
    (out / "analysis.json").write_text(result.analysis.model_dump_json(indent=2) + "\n")
    if result.ok:
        cv2.imwrite(str(out / "artifact_mask.png"), result.artifact_mask.astype(np.uint8) * 255)
        save_label_png(result.labels, str(out / "label_map.png"))
        render_pair_overlay(result, str(out / "overlay.png"), title=f"{Path(real).name} / {Path(fake).name}")
    return result.analysis
