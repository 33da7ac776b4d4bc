"""The parts of a run's settings every pipeline derives the same way from its options: rows
taken under --limit, the inputs' fingerprint (a run's identity), cache folders beside the
output, and the describe/rate stages' LLM configs, checked."""

from __future__ import annotations

import hashlib
import json


def count_manifest_rows(manifests: tuple[str, ...]) -> list[int]:
    """Rows of each manifest; a manifest that cannot be read at all stops the run here,
    with its name, before any work starts."""
    from pipelines.common.manifest import count_rows

    counts = []
    for manifest in manifests:
        try:
            counts.append(count_rows(manifest))
        except Exception as exc:  # noqa: BLE001 - any reader error means an unusable file
            raise SystemExit(f"--input: cannot read {manifest}: {type(exc).__name__}: {exc}") from None
    return counts


def row_caps(counts: list[int], limit: int | None) -> tuple[int, ...]:
    """Rows taken from each manifest: all, or the first `limit` rows over the manifests in order."""
    if limit is None:
        return tuple(counts)
    caps, left = [], limit
    for n in counts:
        caps.append(min(n, left))
        left -= caps[-1]
    return tuple(caps)


def fingerprint(manifests: tuple[str, ...]) -> str:
    """A hash of the manifests' names (as samples record them) and contents."""
    from apache_beam.io.filesystems import FileSystems

    from pipelines.common.manifest import manifest_name

    digest = hashlib.sha256()
    for manifest in manifests:
        digest.update(manifest_name(manifest).encode() + b"\0")
        with FileSystems.open(manifest) as f:  # compressed manifests hash by their content
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def default_cache(output: str, name: str = "llm_cache") -> str:
    """A cache folder beside the output folder, so every run into that parent shares it."""
    from apache_beam.io.filesystems import FileSystems

    trimmed = output.rstrip("/")
    parent = FileSystems.split(trimmed)[0] if ("/" in trimmed) else ""
    return FileSystems.join(parent, name) if parent else name


def llm_settings(options) -> dict:
    """The LLM part of the settings, checked (SystemExit on a bad combination)."""
    from pipelines.common.llm_options import check_llm_options, is_dry_run, llm_config

    check_llm_options(options)
    dry_run = is_dry_run(options)
    if options.llm_batch and dry_run:
        raise SystemExit("--dry_run and --llm_batch exclude each other")
    if getattr(options, "dry_run_pairs", 1) < 1:
        raise SystemExit("--dry_run_pairs must be at least 1")
    if not 1 <= options.min_rating <= 10:
        raise SystemExit("--min_rating must be within 1..10")
    mode = "dry_run" if dry_run else ("submit" if options.llm_batch else "live")
    cache = options.llm_cache or default_cache(options.output)
    llm_backends = [b for b in (options.describer, options.rater) if b not in ("evidence", "none")]
    if options.llm_batch and not llm_backends:
        raise SystemExit("--llm_batch needs an LLM --describer or --rater (gemini, openai)")
    if options.llm_batch and any(b == "openai-compatible" for b in llm_backends):
        raise SystemExit("--llm_batch works with the gemini and openai batch APIs, not openai-compatible servers")
    describer_llm = rater_llm = None
    if options.describer not in ("evidence",):
        describer_llm = llm_config(options, options.describer, options.llm_model, cache, mode)
    if options.rater not in ("evidence", "none"):
        same = options.rater == options.describer
        model = options.llm_rater_model or (options.llm_model if same or options.describer == "evidence" else None)
        rater_llm = llm_config(options, options.rater, model, cache, mode)
    return {"rater": options.rater, "min_rating": options.min_rating,
            # FiFa's only: FaceInstruct's texts name no concepts.
            "max_hallucinated": None if getattr(options, "max_hallucinated", -1) < 0 else options.max_hallucinated,
            "describer_llm": describer_llm, "rater_llm": rater_llm, "llm_batch": options.llm_batch,
            "dry_run": dry_run, "dry_run_pairs": getattr(options, "dry_run_pairs", 1)}


class RunSettings:
    """What every pipeline's frozen settings dataclass derives the same way from its own
    fields: the LLM configs, describe batches, the options the run report records and
    the run's identity.  A subclass has `describer_llm`, `rater_llm`, `expected_inputs`,
    `max_rows_per_shard`, `allow_absolute_paths`, `inputs_fingerprint`, `limit`, and a
    `shaping()` method: the settings that change what the samples hold."""

    def shaping(self) -> dict:
        raise NotImplementedError

    def batches(self) -> int:
        """Describe batches: enough to keep `concurrency` calls busy per batch, and to
        spread over workers."""
        concurrency = max([c.concurrency for c in self.llm_configs] or [1])
        batch_size = max(16, 4 * concurrency)
        return max(1, -(-self.expected_inputs // batch_size))

    def with_failed_keys(self, paths: dict[str, str]) -> RunSettings:
        """Point each LLM config at the file of its requests whose batch answers failed."""
        from dataclasses import replace

        def update(config):
            return replace(config, failed_keys=paths.get(config.slug)) if config else None

        return replace(self, describer_llm=update(self.describer_llm), rater_llm=update(self.rater_llm))

    @property
    def llm_configs(self) -> list:
        return [c for c in (self.describer_llm, self.rater_llm) if c is not None]

    def options_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.shaping(), sort_keys=True).encode()).hexdigest()[:12]

    def options(self) -> dict:
        """The options the run report records: those that shape the samples and those that
        place them."""
        return {**self.shaping(), "max_rows_per_shard": self.max_rows_per_shard,
                "allow_absolute_paths": self.allow_absolute_paths}

    def identity(self) -> dict:
        """What makes two runs the same run: the manifests (names and contents), how many
        rows of them, and the options.  A finished dataset of another identity is only
        replaced with --overwrite."""
        return {"inputs": self.inputs_fingerprint, "limit": self.limit, "options": self.options()}
