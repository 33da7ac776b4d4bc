"""The FaceInstruct run's settings, from pipeline options, as plain library configs.

The dataset readers run here, in the driver, before the pipeline starts: they only parse
label files and list folders, and what they find (every item, and every label row they
could not use) is written to one JSONL items file that the pipeline then reads like a
manifest.  So a source that cannot be read at all stops the run before any work, the run
knows its input count (progress, shard sizes, `--limit`), and its identity covers the
labels themselves, not only the folder names.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields

from pipelines.common.llm_options import LlmFlags
from pipelines.common.run_options import RunFlags
from pipelines.common.run_settings import (
    RunSettings,
    count_manifest_rows,
    default_cache,
    fingerprint,
    llm_settings,
    row_caps,
)
from pipelines.faceinstruct.media import MediaConfig
from pipelines.faceinstruct.options import FaceInstructFlags
from pipelines.llm.config import LlmConfig
from schemas.faceinstruct import SOURCES, FaceItem

_FI, _LLM, _RUN = FaceInstructFlags(), LlmFlags(), RunFlags()
ITEMS_FILE = "sources.jsonl"  # the items the readers found (its name is what rows record as their manifest)
# Shared options FaceInstruct has no use for: refused as unknown instead of silently ignored.
NOT_OURS = {"llm": ("max_hallucinated", "dry_run_pairs"), "run": ()}


@dataclass(frozen=True)
class FaceInstructSettings(RunSettings):
    sources: tuple[tuple[str, str], ...]  # (NAME, root)
    manifests: tuple[str, ...]  # the items file first (when there are sources), then --input's files
    output: str
    describer: str = _LLM.describer
    crop_size: int = _FI.crop_size
    crop_margin: float = _FI.crop_margin
    min_face_px: int = _FI.min_face_px
    fps: float = _FI.fps
    frames: int = _FI.frames
    max_failed_frames: float = _FI.max_failed_frames
    image_format: str = _FI.image_format
    fold: int = _FI.fold
    ffpp_compression: str = _FI.ffpp_compression
    frame_step: int = _FI.frame_step
    disfa_camera: str = _FI.disfa_camera
    max_rows_per_shard: int = _FI.max_rows_per_shard
    test_fraction: float = _FI.test_fraction
    seed: int = _FI.seed
    allow_absolute_paths: bool = _FI.allow_absolute_paths
    input_pattern: str = ""
    expected_inputs: int = 0
    rater: str = _LLM.rater
    min_rating: float = _LLM.min_rating
    describer_llm: LlmConfig | None = None
    rater_llm: LlmConfig | None = None
    llm_batch: str | None = _LLM.llm_batch
    dry_run: bool = False
    limit: int | None = _RUN.limit
    overwrite: bool = _RUN.overwrite
    analysis_cache: str | None = _RUN.analysis_cache  # finished crops by content; resolved by from_options
    row_caps: tuple[int, ...] = ()
    inputs_fingerprint: str = ""
    source_counts: tuple[tuple[str, int, int], ...] = ()  # (NAME, items, rows the reader rejected)

    @classmethod
    def from_options(cls, options) -> FaceInstructSettings:
        from pipelines.common.manifest import match_manifests

        checks = [(options.max_rows_per_shard >= 1, "--max_rows_per_shard must be at least 1"),
                  (0.0 <= options.test_fraction <= 1.0, "--test_fraction must be within 0..1"),
                  (options.crop_size >= 64 and options.crop_size % 2 == 0, "--crop_size must be even and at least 64"),
                  (options.crop_margin >= 0, "--crop_margin must not be negative"),
                  (options.fps > 0, "--fps must be positive"), (options.frames >= 1, "--frames must be at least 1"),
                  (0.0 <= options.max_failed_frames < 1.0, "--max_failed_frames must be within 0..1"),
                  (options.frame_step >= 1, "--frame_step must be at least 1"),
                  (options.limit is None or options.limit >= 1, "--limit must be at least 1")]
        for ok, message in checks:
            if not ok:
                raise SystemExit(message)
        own = {f.name for f in fields(cls)}
        llm = {k: v for k, v in llm_settings(options).items() if k in own}  # checked before any dataset is read
        sources = parse_sources(options.source or [])
        if not sources and options.input is None:
            from pipelines.faceinstruct.bundled_sample import sample_sources

            sources = sample_sources()
        user_manifests: tuple[str, ...] = ()
        if options.input is not None:
            try:
                user_manifests = tuple(match_manifests(options.input))
            except (FileNotFoundError, ValueError) as exc:
                raise SystemExit(f"--input: {exc}") from None
        reader_options = {"fold": options.fold, "compression": options.ffpp_compression,
                          "frame_step": options.frame_step, "camera": options.disfa_camera}
        manifests, counts, digest = user_manifests, (), ""
        if sources:
            items_file, counts, digest = collect_items(sources, reader_options)
            manifests = (items_file, *user_manifests)
        caps = row_caps(count_manifest_rows(manifests), options.limit)
        described = " ".join([f"{name}={root}" for name, root in sources] + ([options.input] if options.input else []))
        copied = {f.name: getattr(options, f.name) for spec in (FaceInstructFlags, RunFlags) for f in fields(spec)
                  if f.name in own and f.name not in ("sources", "manifests")}
        copied["analysis_cache"] = options.analysis_cache or default_cache(options.output, "analysis_cache")
        return cls(sources=sources, manifests=manifests, describer=options.describer, input_pattern=described,
                   expected_inputs=sum(caps), row_caps=caps,
                   inputs_fingerprint=hashlib.sha256(f"{digest}|{fingerprint(user_manifests)}".encode())
                   .hexdigest()[:16], source_counts=counts, **copied, **llm)

    def media_config(self) -> MediaConfig:
        return MediaConfig(crop_size=self.crop_size, margin=self.crop_margin, min_face_px=self.min_face_px,
                           fps=self.fps, frames=self.frames, max_failed_fraction=self.max_failed_frames,
                           image_format=self.image_format)

    def shaping(self) -> dict:
        """The settings that change what the samples hold (not where they go)."""
        keep = ("describer", "crop_size", "crop_margin", "min_face_px", "fps", "frames", "max_failed_frames",
                "image_format", "fold", "ffpp_compression", "frame_step", "disfa_camera", "test_fraction", "seed",
                "rater", "min_rating")
        shaping = {k: v for k, v in asdict(self).items() if k in keep}
        shaping["describer_model"] = self.describer_llm.model if self.describer_llm else None
        shaping["rater_model"] = self.rater_llm.model if self.rater_llm else None
        return shaping



def parse_sources(values: list[str]) -> tuple[tuple[str, str], ...]:
    """`--source NAME=PATH` values -> ((NAME, absolute root), ...), checked."""
    out: list[tuple[str, str]] = []
    for value in values:
        name, eq, root = value.partition("=")
        name = name.strip().lower().replace("-", "_")
        if not eq or not root:
            raise SystemExit(f"--source {value!r}: expected NAME=PATH, e.g. --source dfew=/data/DFEW")
        if name not in SOURCES:
            import difflib

            close = difflib.get_close_matches(name, SOURCES, n=1)
            raise SystemExit(f"--source {value!r}: unknown dataset {name!r}"
                             + (f" (did you mean {close[0]}?)" if close else f"; one of {', '.join(SOURCES)}"))
        if "://" in root:
            raise SystemExit(f"--source {value!r}: a dataset root is a local folder")
        if not os.path.isdir(root):
            raise SystemExit(f"--source {value!r}: {root} is not a folder")
        if any(n == name for n, _ in out):
            raise SystemExit(f"--source {name} is given twice")
        out.append((name, os.path.abspath(root)))
    return tuple(out)


def collect_items(sources, reader_options: dict) -> tuple[str, tuple[tuple[str, int, int], ...], str]:
    """Run the readers; write every item and reader-rejected row to one JSONL file (a
    temporary folder, removed when the driver exits).  Returns (its path, per source
    (name, items, rejected), the digest of what was read without where it lies)."""
    from pipelines.faceinstruct.readers import SourceError, read_source

    folder = tempfile.mkdtemp(prefix="facext-faceinstruct-")
    atexit.register(shutil.rmtree, folder, True)
    path = os.path.join(folder, ITEMS_FILE)
    digest = hashlib.sha256()
    counts = []
    with open(path, "w", encoding="utf-8") as f:
        for name, root in sources:
            items = rejected = 0
            try:
                for record in read_source(name, root, reader_options):
                    if isinstance(record, FaceItem):
                        line = {"item": record.model_dump(exclude={"manifest", "row"})}
                        items += 1
                    else:
                        line = {"rejected": record.model_dump()}
                        rejected += 1
                    f.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
                    kept = {k: v for k, v in next(iter(line.values())).items() if k != "media"}
                    digest.update(json.dumps(kept, sort_keys=True).encode() + b"\n")
            except SourceError as exc:
                raise SystemExit(f"--source {name}={root}: {exc}") from None
            counts.append((name, items, rejected))
    return path, tuple(counts), digest.hexdigest()[:16]


def items_parser(allow_absolute: bool):
    """The row parser of the pipeline's inputs: lines of the items file, or rows of a user manifest."""
    return _ItemsParser(allow_absolute)


class _ItemsParser:
    def __init__(self, allow_absolute: bool):
        from pipelines.faceinstruct.readers.manifest import manifest_parser

        self.manifest_rows = manifest_parser(allow_absolute)

    def __call__(self, manifest: str, index: int, row):
        from pipelines.common.manifest import manifest_name
        from schemas.faceinstruct import RejectedItem

        if manifest_name(manifest) == ITEMS_FILE and isinstance(row, dict) and ("item" in row or "rejected" in row):
            if "rejected" in row:
                return RejectedItem(**row["rejected"])
            return FaceItem(**row["item"], manifest=ITEMS_FILE, row=index)
        return self.manifest_rows(manifest, index, row)


