"""The command-line options of the LLM layer, shared by the pipelines and `facext estimate`."""

from __future__ import annotations

from pipelines.llm.backends import BACKENDS, KEY_VARIABLES, api_key
from pipelines.llm.config import LlmConfig

DESCRIBERS = ("evidence", *BACKENDS)
RATERS = ("evidence", "none", *BACKENDS)


def add_llm_arguments(parser) -> None:
    group = parser.add_argument_group("LLM layer")
    group.add_argument("--describer", default="evidence", choices=DESCRIBERS,
                       help="who writes the explanations: the offline evidence describer (default), "
                            "gemini, openai, or any openai-compatible server")
    group.add_argument("--rater", default="evidence", choices=RATERS,
                       help="who scores them: the offline evidence rater (default), a model, or none")
    group.add_argument("--llm_model", default=None,
                       help="model name (default: gemini-2.5-flash for gemini, gpt-4o-mini for openai)")
    group.add_argument("--llm_rater_model", default=None,
                       help="the rater's model when it differs from --llm_model")
    group.add_argument("--llm_base_url", default=None,
                       help="endpoint of an openai-compatible server (vLLM, Ollama, LM Studio), "
                            "e.g. http://localhost:8000/v1; also overrides the gemini/openai endpoint")
    group.add_argument("--llm_cache", default=None,
                       help="answer cache folder, any Beam filesystem path (default: llm_cache beside "
                            "the output folder)")
    group.add_argument("--llm_max_attempts", type=int, default=5,
                       help="attempts per call on timeouts, connection errors, 429 and 5xx (default 5)")
    group.add_argument("--llm_rpm", type=float, default=None, help="requests per minute per worker, at most")
    group.add_argument("--llm_tpm", type=float, default=None, help="tokens per minute per worker, at most")
    group.add_argument("--llm_concurrency", type=int, default=8, help="calls in flight per worker (default 8)")
    group.add_argument("--llm_timeout_s", type=float, default=120.0, help="seconds per call (default 120)")
    group.add_argument("--llm_backoff_s", type=float, default=1.0,
                       help="first retry delay; doubles per attempt, with jitter (default 1)")
    group.add_argument("--llm_vertex", action="store_true",
                       help="gemini through Vertex AI (Application Default Credentials)")
    group.add_argument("--llm_project", default=None, help="Vertex AI project")
    group.add_argument("--llm_location", default="us-central1", help="Vertex AI location")
    group.add_argument("--llm_batch", choices=("submit", "collect"), default=None,
                       help="use the providers' batch APIs (half price): submit the requests, then "
                            "collect (repeat until the run finishes)")
    # --dry_run itself belongs to Beam (TestOptions, which takes a value): `bare_flags`
    # turns a bare --dry_run into --dry_run=true, and `is_dry_run` reads it.
    group.add_argument("--dry_run_pairs", type=int, default=2, help="pairs a dry run renders (default 2)")
    group.add_argument("--min_rating", type=float, default=6,
                       help="pairs whose overall rating is below this go to rejected (default 6)")
    group.add_argument("--max_hallucinated", type=int, default=0,
                       help="pairs whose texts name more concepts without artifacts go to rejected "
                            "(default 0; -1 keeps every pair and only counts them)")


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
