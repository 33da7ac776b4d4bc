"""Before paying for a run: render its prompts (`--dry_run`) and price it (`facext estimate`).

Both analyse a few pairs of the manifest for real (stages 1-5, as the pipeline does) and
run the describer and rater on them with a client that records each request instead of
calling the model (every answer is a schema-valid placeholder), so the prompts and their
counts are exactly those a real run would send.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipelines.llm.request import LlmRequest

# Typical answer lengths in tokens (1-3 sentences; a paragraph; four scores and a reason),
# used only to price output before any answer exists.
TYPICAL_OUTPUT_TOKENS = {"fifa_concept_explanation": 80, "fifa_parent_aggregation": 120,
                         "fifa_image_aggregation": 150, "fifa_rating": 90}


@dataclass
class PairPlan:
    pair_id: str
    requests: list[LlmRequest]
    backends: list[tuple[str, str]]  # (backend, model) of each request


def manifest_rows(settings) -> Iterator:
    """The manifest rows the pipeline analyses, in order, parsed: every row (a bad one as
    its rejected row) except those repeating an earlier row's `pair_id`, which the pipeline
    rejects as `duplicate_pair_id` before any analysis (it keeps the first)."""
    from pipelines.fifa.pairs import read_manifest
    from schemas.fifa import PairInput

    seen: set[str] = set()
    caps = settings.row_caps or (None,) * len(settings.manifests)  # --limit's share of each manifest
    for manifest, cap in zip(settings.manifests, caps, strict=True):
        for row in islice(read_manifest(manifest, settings.allow_absolute_paths), cap):
            if isinstance(row, PairInput):
                if row.pair_id in seen:
                    continue
                seen.add(row.pair_id)
            yield row


def analysed_sample(settings, limit: int, spread: int | None = None,
                    rows_total: int | None = None) -> tuple[list, int, int]:
    """The first `limit` manifest pairs that pass stages 1-5, how many rows passed and how
    many were tried (rows of `manifest_rows`: a repeated pair_id is never tried).  With
    `spread`, `spread * limit` rows spaced evenly over the `rows_total` rows (default: the
    manifest's) are all tried (so bad rows count as often as they occur: a pass rate);
    without, rows are tried in order until `limit` pass (at most 25 per pair wanted)."""
    from pipelines.fifa.analysis import PairAnalyzer
    from pipelines.fifa.stages import analyse_pair
    from schemas.common import PairRejected
    from schemas.fifa import PairInput

    wanted = max(1, (spread or 25) * limit)
    total = settings.expected_inputs if rows_total is None else rows_total
    stride = max(1, math.ceil(total / wanted)) if spread else 1
    rows = manifest_rows(settings)
    found, passed, tried = [], 0, 0
    with PairAnalyzer(settings.analysis_config()) as analyzer:
        for row in islice(rows, 0, None, stride):
            if tried >= wanted:
                break
            tried += 1
            if not isinstance(row, PairInput):
                continue
            try:
                pair = analyse_pair(analyzer, row)
            except PairRejected:
                continue
            passed += 1
            if len(found) < limit:
                found.append(pair)
            if not spread and len(found) >= limit:
                break
    return found, passed, tried


def recorded_plans(settings, pairs: list) -> list[PairPlan]:
    """The requests the describer and rater would send for each pair."""
    from fict.tree import load_tree
    from pipelines.fifa.describe import make_describer
    from pipelines.fifa.llm_writers import LlmDescriber, LlmRater
    from pipelines.fifa.rating import make_rater

    tree = load_tree()
    clients = {}

    def client(config):
        key = (config.backend, config.model)
        if key not in clients:
            clients[key] = replace(config, mode="dry_run", cache=None).client()
        return clients[key]

    if settings.describer_llm:
        describer = LlmDescriber(tree, client(settings.describer_llm))
    else:
        describer = make_describer(settings.describer, tree)
    if settings.rater_llm:
        rater = LlmRater(tree, client(settings.rater_llm))
    else:
        rater = make_rater(settings.rater, tree) if settings.rater not in ("none",) else None
    plans = []
    for pair in pairs:
        for c in clients.values():
            c.recorded.clear()
        description = describer.describe(pair.analysis, key=pair.pair.pair_id, pair=pair)
        if rater is not None:
            rater.rate(pair.analysis, description.concepts, description.image, key=pair.pair.pair_id, pair=pair)
        requests, backends = [], []
        for (backend, model), c in clients.items():
            requests += c.recorded
            backends += [(backend, model)] * len(c.recorded)
        plans.append(PairPlan(pair.pair.pair_id, requests, backends))
    return plans


def dry_run(settings) -> str:
    """Write the prompts of `settings.dry_run_pairs` pairs under OUTPUT/dry_run; no call."""
    from pipelines.common.shards import join

    pairs, _, tried = analysed_sample(settings, settings.dry_run_pairs)
    if not pairs:
        raise SystemExit(f"--dry_run: none of the first {tried} manifest rows passed the analysis")
    plans = recorded_plans(settings, pairs)
    root = join(settings.output, "dry_run")
    images_written: set[str] = set()
    index = []
    for plan in plans:
        entries = []
        for i, (request, (backend, model)) in enumerate(zip(plan.requests, plan.backends, strict=True)):
            names = []
            for image in request.images:
                name = f"images/{image.sha256[:16]}{image.extension}"
                if name not in images_written:
                    _write(join(root, name), image.data)
                    images_written.add(name)
                names.append(name)
            file = f"{plan.pair_id}/{i:03d}_{request.template.id.split('@')[0]}.md"
            _write(join(root, file), prompt_markdown(request, backend, model, names).encode("utf-8"))
            entries.append({"file": file, "template": request.template.model_dump(), "backend": backend,
                            "model": model, "images": names,
                            "estimated_input_tokens": request.estimated_input_tokens(backend)})
        index.append({"pair_id": plan.pair_id, "calls": len(entries), "prompts": entries})
    _write(join(root, "index.json"), (json.dumps(index, indent=2) + "\n").encode("utf-8"))
    calls = sum(len(p.requests) for p in plans)
    if not calls:
        return (f"dry run: --describer {settings.describer} --rater {settings.rater} call no model; "
                f"nothing to render ({root}/index.json lists the pairs)")
    return f"dry run: {calls} prompts of {len(plans)} pairs written to {root} (no model was called)"


def prompt_markdown(request: LlmRequest, backend: str, model: str, images: list[str]) -> str:
    schema = json.dumps(request.json_schema(), indent=2)
    shown = "\n".join(f"![image {i + 1}](../{name})" for i, name in enumerate(images)) or "(none)"
    return (f"# {request.template.id} (version {request.template.version})\n\n"
            f"backend `{backend}`, model `{model}`, temperature {request.temperature}, "
            f"max output tokens {request.max_output_tokens}, about "
            f"{request.estimated_input_tokens(backend)} input tokens\n\n"
            f"## System\n\n{request.system}\n\n## User\n\n{request.user}\n\n## Images, in order\n\n{shown}\n\n"
            f"## Answer schema\n\n```json\n{schema}\n```\n")


def _write(path: str, data: bytes) -> None:
    with FileSystems.create(path) as f:
        f.write(data)


def estimate(settings, sample: int = 5, batch: bool = False, pairs: int | None = None,
             workers: int = 10, rpm: float = 1000) -> dict[str, Any]:
    """Expected calls, tokens and cost of a run, from `sample` analysed pairs.  Rows that
    repeat an earlier row's pair_id are no pairs (the pipeline rejects them): the expected
    pairs are the other rows times the sample's pass rate.

    With `pairs`, the run is priced for that many pairs like the sampled ones (not the
    manifest's rows), at standard and batch prices both, with its compute on `workers`
    Dataflow workers (calls made at `rpm` requests a minute) and its bytes
    (`pipelines.fifa.scale`)."""
    from pipelines.llm.prices import load_prices

    in_manifest = sum(1 for _ in manifest_rows(settings))
    rows, unique = (settings.expected_inputs, in_manifest) if pairs is None else (pairs, pairs)
    sampled, passed, tried = analysed_sample(settings, sample, spread=4, rows_total=in_manifest)
    pass_rate = passed / tried if tried else 0.0
    plans = recorded_plans(settings, sampled)
    prices = load_prices()
    per_model: dict[str, dict[str, float]] = {}
    for plan in plans:
        for request, (backend, model) in zip(plan.requests, plan.backends, strict=True):
            entry = per_model.setdefault(f"{backend}/{model}", {"calls": 0, "input_tokens": 0, "output_tokens": 0})
            entry["calls"] += 1
            entry["input_tokens"] += request.estimated_input_tokens(backend)
            entry["output_tokens"] += TYPICAL_OUTPUT_TOKENS.get(request.template.id.split("@")[0], 120)
    expected_pairs = unique * pass_rate
    models = {}
    total_cost: float | None = 0.0
    for name, entry in per_model.items():
        scale = expected_pairs / len(plans) if plans else 0.0
        calls, tokens_in, tokens_out = (math.ceil(entry[k] * scale) for k in ("calls", "input_tokens", "output_tokens"))
        cost = prices.cost(name.split("/", 1)[1], tokens_in, tokens_out, batch=batch)
        other_tier = prices.cost(name.split("/", 1)[1], tokens_in, tokens_out, batch=not batch)
        total_cost = None if cost is None or total_cost is None else total_cost + cost
        models[name] = {"calls": calls, "input_tokens": tokens_in, "output_tokens": tokens_out,
                        "cost_usd": None if cost is None else round(cost, 4),
                        ("cost_usd_standard" if batch else "cost_usd_batch"):
                            None if other_tier is None else round(other_tier, 4),
                        "calls_per_pair": round(entry["calls"] / len(plans), 2)}
    return {
        "input": settings.input_pattern, "rows": rows, "duplicate_rows": rows - unique,
        "sampled_rows": tried, "passed_rows": passed,
        "described_pairs": len(sampled), "priced_for_pairs": pairs,
        "analysis_pass_rate": round(pass_rate, 4), "expected_pairs": round(expected_pairs),
        "describer": settings.describer, "rater": settings.rater, "batch": batch,
        "models": models, "calls": sum(m["calls"] for m in models.values()),
        "input_tokens": sum(m["input_tokens"] for m in models.values()),
        "output_tokens": sum(m["output_tokens"] for m in models.values()),
        "cost_usd": None if total_cost is None else round(total_cost, 4),
        "prices_as_of": prices.as_of,
        "note": "tokens from the rendered prompts of the sampled pairs (about 4 characters a token plus "
                "the provider's image tokens) and typical answer lengths; cache hits cost nothing",
        **({"compute": _compute(unique, expected_pairs, sum(m["calls"] for m in models.values()), settings,
                                workers, rpm)} if pairs is not None else {}),
    }


def _compute(pairs: int, written: float, calls: int, settings, workers: int, rpm: float) -> dict[str, Any]:
    from pipelines.fifa.scale import compute_figures

    return compute_figures(pairs, written, calls, crop_size=settings.crop_size, workers=workers, rpm=rpm)


def estimate_text(result: dict[str, Any]) -> str:
    repeated = (f" ({result['duplicate_rows']} repeat an earlier row's pair_id: rejected, not counted)"
                if result["duplicate_rows"] else "")
    what = (f"{result['rows']:,} pairs (--pairs) like those of {result['input']}" if result.get("priced_for_pairs")
            else f"{result['rows']} manifest rows")
    lines = [(f"{what}{repeated}; {result['passed_rows']} of {result['sampled_rows']} "
              f"sampled rows passed the analysis -> about {result['expected_pairs']} pairs to describe "
              f"(prompts rendered for {result['described_pairs']})")]
    for name, m in result["models"].items():
        cost = "unknown price" if m["cost_usd"] is None else _dollars(m["cost_usd"])
        other = m.get("cost_usd_batch", m.get("cost_usd_standard"))
        if m["cost_usd"] is not None and other is not None and "compute" in result:
            cost += f" ({_dollars(other)} {'standard' if result['batch'] else 'with the batch API'})"
        lines.append(f"  {name}: {m['calls']:,} calls ({m['calls_per_pair']} per pair), "
                     f"{m['input_tokens']:,} input + {m['output_tokens']:,} output tokens, {cost}")
    if not result["models"]:
        lines.append(f"  --describer {result['describer']} --rater {result['rater']}: no model is called, $0")
    total = "unknown" if result["cost_usd"] is None else _dollars(result["cost_usd"])
    tier = "batch (half price)" if result["batch"] else "standard"
    lines.append(f"total: {result['calls']:,} calls, {total} at {tier} prices as of {result['prices_as_of']}")
    if "compute" in result:
        from pipelines.fifa.scale import compute_text

        lines.append(compute_text(result["compute"]))
    return "\n".join(lines)


def _dollars(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.4f}"
