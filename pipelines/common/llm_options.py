"""The options of the describe and rate stages, shared by the pipelines and `facext estimate`:
who describes and rates (the offline writers or an LLM backend), the bars a unit must pass,
and the LLM client's settings, turned into an `LlmConfig` per backend.

They live here, not in `pipelines.llm`, because they are the pipelines' choices: the LLM
layer itself takes an `LlmConfig` and knows no command line.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from pipelines.common.options import option
from pipelines.llm.backends import BACKENDS, DEFAULT_MODELS, KEY_VARIABLES, api_key
from pipelines.llm.config import LlmConfig

DESCRIBERS = ("evidence", *BACKENDS)
RATERS = ("evidence", "none", *BACKENDS)


@dataclass(frozen=True)
class LlmFlags:
    """The options of the describe and rate stages and of their LLM client, declared once:
    `add_arguments` makes their flags, and the README's tables are checked against them."""

    describer: str = option("evidence", "who writes the explanations: the offline evidence describer, gemini, "
                            "openai, or any openai-compatible server", choices=DESCRIBERS)
    rater: str = option("evidence", "who scores them: the offline evidence rater, a model, or none", choices=RATERS)
    llm_model: str | None = option(None, "model name; required for openai-compatible, gemini and openai have "
                                   "defaults", shown=" / ".join(m for m in DEFAULT_MODELS.values() if m))
    llm_rater_model: str | None = option(None, "the rater's model when it differs from --llm_model",
                                         shown="--llm_model")
    llm_base_url: str | None = option(None, "endpoint of an openai-compatible server (vLLM, Ollama, LM Studio), "
                                      "e.g. http://localhost:8000/v1; also overrides the gemini/openai endpoint",
                                      shown="the provider's")
    llm_cache: str | None = option(None, "answer cache folder, any Beam filesystem path",
                                   shown="llm_cache/ beside --output")
    llm_max_attempts: int = option(5, "attempts per call on timeouts, connection errors, 429 and 5xx")
    llm_rpm: float | None = option(None, "requests per minute per worker, at most")
    llm_tpm: float | None = option(None, "tokens per minute per worker, at most")
    llm_concurrency: int = option(8, "calls in flight per worker")
    llm_timeout_s: float = option(120.0, "seconds per call")
    llm_backoff_s: float = option(1.0, "first retry delay; doubles per attempt, with jitter")
    llm_vertex: bool = option(False, "gemini through Vertex AI (Application Default Credentials)")
    llm_project: str | None = option(None, "Vertex AI project")
    llm_location: str = option("us-central1", "Vertex AI location")
    llm_batch: str | None = option(None, "use the providers' batch APIs (half price): submit the requests, then "
                                   "collect (repeat until the run finishes)", choices=("submit", "collect"))
    # --dry_run itself belongs to Beam (TestOptions, which takes a value): `bare_flags`
    # turns a bare --dry_run into --dry_run=true, and `is_dry_run` reads it.
    dry_run_pairs: int = option(2, "pairs a dry run renders")
    # An int, not 6.0: the parsed default goes into every run's options hash, and 6.0 would
    # change the hash of every run made with the default.
    min_rating: float = option(6, "pairs whose overall rating is below this go to rejected")
    max_hallucinated: int = option(0, "pairs whose texts name more concepts without artifacts go to rejected "
                                   "(-1 keeps every pair and only counts them)")


def check_llm_options(options) -> None:
    """The numeric LLM options, checked even when no model is used (a typo should not wait
    for the day a model is)."""
    for name in ("llm_max_attempts", "llm_concurrency"):
        if getattr(options, name) < 1:
            raise SystemExit(f"--{name} must be at least 1")
    for name in ("llm_rpm", "llm_tpm", "llm_timeout_s"):
        if getattr(options, name) is not None and getattr(options, name) <= 0:
            raise SystemExit(f"--{name} must be positive")
    if options.llm_backoff_s < 0:
        raise SystemExit("--llm_backoff_s must not be negative")


def llm_config(options, backend: str, model: str | None, cache: str | None, mode: str = "live") -> LlmConfig:
    """The `LlmConfig` of a backend chosen on the command line; SystemExit when unusable."""
    try:
        model = LlmConfig.model_for(backend, model)
    except ValueError as exc:
        raise SystemExit(f"{exc}") from None
    if backend == "openai-compatible" and not options.llm_base_url:
        raise SystemExit("--describer/--rater openai-compatible needs --llm_base_url (e.g. http://localhost:8000/v1)")
    needs_key = mode in ("live", "submit") and backend in ("gemini", "openai")
    vertex = backend == "gemini" and options.llm_vertex
    if needs_key and not vertex and api_key(backend, required=False) is None:
        raise SystemExit(f"no API key for {backend}: set {' or '.join(KEY_VARIABLES[backend])} "
                             f"in the environment (keys are read from the environment only)")
    check_llm_options(options)
    return LlmConfig(
        backend=backend, model=model, cache=cache, base_url=options.llm_base_url,
        max_attempts=options.llm_max_attempts, rpm=options.llm_rpm, tpm=options.llm_tpm,
        concurrency=options.llm_concurrency, timeout_s=options.llm_timeout_s,
        backoff_base_s=options.llm_backoff_s, vertex=options.llm_vertex, project=options.llm_project,
        location=options.llm_location, mode=mode,
    )


BARE_FLAGS = ("--dry_run",)
DRY_RUN_HELP = ("render the prompts of --dry_run_pairs pairs under OUTPUT/dry_run and stop: no model is called, "
                "no dataset is written (Beam's option; --dry_run alone means --dry_run=true)")


def add_dry_run_flag(parser) -> None:
    """Declares Beam's `--dry_run` (TestOptions': a value, default off) on a pipeline's own
    parser, the one that prints its `--help`, so the help lists it.  Where Beam's own is
    already there (the parser of every options class, which Beam builds to run), Beam's
    stays; both read `--dry_run=true` (what `bare_flags` makes of a bare one) alike."""
    group = parser.add_argument_group("Beam", "Beam's own options apply too (--runner, --direct_num_workers, "
                                              "--project, ...); any other option is an error")
    try:
        group.add_argument("--dry_run", nargs="?", const="true", default=False, metavar="true",
                            help=f"{DRY_RUN_HELP} (default: off)")
    except argparse.ArgumentError:  # TestOptions declared it in this parser already
        pass


def bare_flags(argv: list[str]) -> list[str]:
    """`--dry_run` given alone (as users type it) becomes `--dry_run=true` for Beam's parser."""
    out = []
    for i, arg in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else None
        if arg in BARE_FLAGS and (following is None or following.startswith("--")):
            out.append(f"{arg}=true")
        else:
            out.append(arg)
    return out


def is_dry_run(options) -> bool:
    """Beam's --dry_run (it lives on Beam's TestOptions view), or our own attribute."""
    from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

    if isinstance(options, PipelineOptions):
        value = options.view_as(TestOptions).dry_run
    else:
        value = getattr(options, "dry_run", False)
    return value is True or str(value).lower() in ("true", "1", "yes")
