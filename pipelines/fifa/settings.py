"""The FiFa-Instruct run's settings, from pipeline options, as plain library configs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from fict.coverage import ConceptConfig
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
from pipelines.fifa.analysis import AnalysisConfig
from pipelines.fifa.artifacts import mask_config
from pipelines.fifa.options import FifaFlags
from pipelines.fifa.samples import SampleConfig
from pipelines.llm.config import LlmConfig
from pipelines.vision.faces import FaceGeometryConfig

# The options' defaults, declared once in the flags' dataclasses.
_FIFA, _LLM, _RUN = FifaFlags(), LlmFlags(), RunFlags()


@dataclass(frozen=True)
class FifaSettings(RunSettings):
    manifests: tuple[str, ...]
    output: str
    describer: str = _LLM.describer
    crop_size: int = _FIFA.crop_size
    mask_mode: str = _FIFA.mask_mode
    mask_threshold: float | None = _FIFA.mask_threshold
    mask_percentile: float = _FIFA.mask_percentile
    coverage_threshold: float = _FIFA.coverage_threshold
    max_rows_per_shard: int = _FIFA.max_rows_per_shard
    test_fraction: float = _FIFA.test_fraction
    seed: int = _FIFA.seed
    allow_absolute_paths: bool = _FIFA.allow_absolute_paths
    input_pattern: str = ""
    expected_inputs: int = 0  # manifest rows, counted by the driver to size the shards
    rater: str = _LLM.rater  # evidence | none | an LLM backend
    # A float here as it always was (the option's default is the int 6); both go into
    # options hashes, so neither changes.
    min_rating: float = float(_LLM.min_rating)
    max_hallucinated: int | None = _LLM.max_hallucinated  # None: count only
    describer_llm: LlmConfig | None = None
    rater_llm: LlmConfig | None = None
    llm_batch: str | None = _LLM.llm_batch  # submit | collect
    dry_run: bool = False  # Beam's --dry_run
    dry_run_pairs: int = _LLM.dry_run_pairs
    limit: int | None = _RUN.limit
    overwrite: bool = _RUN.overwrite
    analysis_cache: str | None = _RUN.analysis_cache  # resolved by from_options: never None there
    row_caps: tuple[int, ...] = ()  # rows taken from each manifest (all of them without --limit)
    inputs_fingerprint: str = ""  # the manifests' names and contents (a run's identity)

    @classmethod
    def from_options(cls, options) -> FifaSettings:
        from pipelines.common.manifest import match_manifests

        if options.max_rows_per_shard < 1:
            raise SystemExit("--max_rows_per_shard must be at least 1")
        if not 0.0 <= options.test_fraction <= 1.0:
            raise SystemExit("--test_fraction must be within 0..1")
        if options.crop_size < 64:
            raise SystemExit("--crop_size must be at least 64")
        pattern = options.input
        if pattern is None:
            from pipelines.fifa.bundled_sample import sample_manifest

            pattern = str(sample_manifest())
        try:
            manifests = tuple(match_manifests(pattern))
        except (FileNotFoundError, ValueError) as exc:
            raise SystemExit(f"--input: {exc}") from None
        if options.limit is not None and options.limit < 1:
            raise SystemExit("--limit must be at least 1")
        # The FiFa and run options the settings hold under the same name are copied as parsed.
        own = {f.name for f in fields(cls)}
        copied = {f.name: getattr(options, f.name) for spec in (FifaFlags, RunFlags) for f in fields(spec)
                  if f.name in own}
        copied["analysis_cache"] = options.analysis_cache or default_cache(options.output, "analysis_cache")
        caps = row_caps(count_manifest_rows(manifests), options.limit)
        settings = cls(
            manifests=manifests, describer=options.describer, input_pattern=pattern,
            expected_inputs=sum(caps), row_caps=caps, inputs_fingerprint=fingerprint(manifests),
            **copied, **llm_settings(options),
        )
        try:
            settings.analysis_config()
        except ValueError as exc:
            raise SystemExit(f"invalid option: {exc}") from None
        return settings

    def analysis_config(self) -> AnalysisConfig:
        return AnalysisConfig(
            face=FaceGeometryConfig(crop_size=self.crop_size),
            mask=mask_config(self.mask_mode, self.mask_threshold, self.mask_percentile),
            concepts=replace(ConceptConfig(), min_coverage=self.coverage_threshold),
        )

    def sample_config(self) -> SampleConfig:
        return SampleConfig(seed=self.seed, test_fraction=self.test_fraction)

    def shaping(self) -> dict:
        """The settings that change what the samples hold (not where they go)."""
        shaping = asdict(self)
        for key in ("manifests", "output", "max_rows_per_shard", "allow_absolute_paths", "input_pattern",
                    "expected_inputs", "describer_llm", "rater_llm", "llm_batch", "dry_run", "dry_run_pairs",
                    "limit", "overwrite", "analysis_cache", "row_caps", "inputs_fingerprint"):
            shaping.pop(key)
        # Of the LLM options only the models shape the texts; limits, cache and endpoint do not.
        shaping["describer_model"] = self.describer_llm.model if self.describer_llm else None
        shaping["rater_model"] = self.rater_llm.model if self.rater_llm else None
        return shaping

