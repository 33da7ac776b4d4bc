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
    mask_mode: str = option("hysteresis", "artifact mask: seeds above the pair's own noise grown through the "
                                          "soft border of each edit (docs/masks.md), a fixed difference threshold, "
                                          "or the top percentile", choices=("hysteresis", "absolute", "percentile"))
    mask_threshold: float | None = option(None, "grey levels 0..255; hysteresis: seed level of the largest channel "
                                                "change; absolute: mean |fake-real| over RGB",
                                          shown="6 (hysteresis), 12 (absolute)")
    mask_percentile: float = option(95.0, "percentile mode: keep differences above this percentile")
    coverage_threshold: float = option(0.10, "an atomic concept has artifacts above this coverage |A∩R|/|R|")
    max_rows_per_shard: int = option(1000, "rows per Arrow file, at most")
    test_fraction: float = option(0.1, "share of identities (subject, else pair) in the test split")
    seed: int = option(0, "varies phrasings, regions and boxes")
    allow_absolute_paths: bool = option(False, "let manifest rows name absolute paths, URLs or paths outside "
                                               "its folder")
