"""The FiFa-Instruct pipeline's own options, declared once: their flags (`FifaOptions`), the
defaults of `FifaSettings` and the README's option table all come from `FifaFlags`.

The options of the describe and rate stages are shared (`pipelines.common.llm_options.LlmFlags`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.common.options import option


@dataclass(frozen=True)
class FifaFlags:
    input: str | None = option(None, "manifest of pairs (JSONL, CSV or Parquet): path, glob or URL",
                               shown="the bundled sample pairs")
    output: str = option("out/fifa_instruct", "output folder or URL")
    crop_size: int = option(512, "side of the aligned crop, px")
    mask_mode: str = option("absolute", "artifact mask: fixed difference threshold, or top percentile",
                            choices=("absolute", "percentile"))
    mask_threshold: float = option(12.0, "absolute mode: mean |fake-real| over RGB, 0..255")
    mask_percentile: float = option(95.0, "percentile mode: keep differences above this percentile")
    coverage_threshold: float = option(0.10, "an atomic concept has artifacts above this coverage |A∩R|/|R|")
    max_rows_per_shard: int = option(1000, "rows per Arrow file, at most")
    test_fraction: float = option(0.1, "share of identities (subject, else pair) in the test split")
    seed: int = option(0, "varies phrasings, regions and boxes")
    allow_absolute_paths: bool = option(False, "let manifest rows name absolute paths, URLs or paths outside "
                                               "its folder")
    # Read by `expand_config` before Beam parses; declared so --help lists it and Beam accepts it.
    config: str | None = option(None, "YAML file of options; flags override it")
    # Read by `pipelines.common.logs.setup_pipeline` before Beam parses (-v is spelled --verbose there).
    verbose: bool = option(False, "show third-party warnings and native log lines (-v)")
