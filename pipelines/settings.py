"""The FiFa-Instruct run's settings, from pipeline options, as plain library configs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from fict.coverage import ConceptConfig
from pipelines.analysis import AnalysisConfig
from pipelines.artifacts import MaskConfig
from pipelines.faces import FaceGeometryConfig
from pipelines.samples import SampleConfig


@dataclass(frozen=True)
class FifaSettings:
    manifests: tuple[str, ...]
    output: str
    describer: str = "evidence"
    crop_size: int = 512
    mask_mode: str = "absolute"
    mask_threshold: float = 12.0
    mask_percentile: float = 95.0
    coverage_threshold: float = 0.10
    max_rows_per_shard: int = 1000
    test_fraction: float = 0.1
    seed: int = 0
    allow_absolute_paths: bool = False
    input_pattern: str = ""
    expected_inputs: int = 0  # manifest rows, counted by the driver to size the shards

    @classmethod
    def from_options(cls, options) -> FifaSettings:
        from pipelines.describe import DESCRIBERS
        from pipelines.manifest import match_manifests

        if options.describer not in DESCRIBERS:
            raise SystemExit(f"--describer: unknown {options.describer!r}; choose one of {sorted(DESCRIBERS)}")
        if options.max_rows_per_shard < 1:
            raise SystemExit("--max_rows_per_shard must be at least 1")
        if not 0.0 <= options.test_fraction <= 1.0:
            raise SystemExit("--test_fraction must be within 0..1")
        if options.crop_size < 64:
            raise SystemExit("--crop_size must be at least 64")
        pattern = options.input
        if pattern is None:
            from build_tools.bundled_sample import sample_manifest

            pattern = str(sample_manifest())
        try:
            manifests = tuple(match_manifests(pattern))
        except (FileNotFoundError, ValueError) as exc:
            raise SystemExit(f"--input: {exc}") from None
        settings = cls(
            manifests=manifests, output=options.output, describer=options.describer,
            crop_size=options.crop_size, mask_mode=options.mask_mode,
            mask_threshold=options.mask_threshold, mask_percentile=options.mask_percentile,
            coverage_threshold=options.coverage_threshold,
            max_rows_per_shard=options.max_rows_per_shard, test_fraction=options.test_fraction,
            seed=options.seed, allow_absolute_paths=options.allow_absolute_paths,
            input_pattern=pattern, expected_inputs=_count_rows(manifests),
        )
        try:
            settings.analysis_config()
        except ValueError as exc:
            raise SystemExit(f"invalid option: {exc}") from None
        return settings

    def analysis_config(self) -> AnalysisConfig:
        return AnalysisConfig(
            face=FaceGeometryConfig(crop_size=self.crop_size),
            mask=MaskConfig(mode=self.mask_mode, threshold=self.mask_threshold,
                            percentile=self.mask_percentile),
            concepts=replace(ConceptConfig(), min_coverage=self.coverage_threshold),
        )

    def sample_config(self) -> SampleConfig:
        return SampleConfig(seed=self.seed, test_fraction=self.test_fraction)

    def shaping(self) -> dict:
        """The settings that change what the samples hold (not where they go)."""
        shaping = asdict(self)
        for key in ("manifests", "output", "max_rows_per_shard", "allow_absolute_paths", "input_pattern",
                    "expected_inputs"):
            shaping.pop(key)
        return shaping

    def options_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.shaping(), sort_keys=True).encode()).hexdigest()[:12]


def _count_rows(manifests: tuple[str, ...]) -> int:
    """Rows of all manifests; a manifest that cannot be read at all stops the run here,
    with its name, before any work starts."""
    from pipelines.manifest import count_rows

    total = 0
    for manifest in manifests:
        try:
            total += count_rows(manifest)
        except Exception as exc:  # noqa: BLE001 - any reader error means an unusable file
            raise SystemExit(f"--input: cannot read {manifest}: {type(exc).__name__}: {exc}") from None
    return total
