"""The run report's sections every pipeline shares: inputs that add up, rejects by stage
and reason, the per-stage table, samples per task and split, shards, LLM calls and cost,
rating histograms, timings.

The report is built from (key, number) events summed over the whole run (see
`pipelines.common.beam_tags.event`).
"""

from __future__ import annotations

import re
from typing import Any

from pipelines.llm.prices import load_prices
from schemas.common import Stage
from schemas.llm import CRITERIA
from schemas.version import facext_version


def breakdown(events: dict[tuple, float], kind: str, firsts: tuple[str, ...] = (),
               seconds: tuple[str, ...] = ()) -> tuple[dict, dict, dict]:
    """Counts of the (kind, a, b) events by a, by b, and by a then b; the names given
    appear (with 0) even when no event has them, the others in sorted order."""
    found = sorted((k[1], k[2], int(v)) for k, v in events.items() if k[0] == kind)
    by_a, by_b = dict.fromkeys(firsts, 0), dict.fromkeys(seconds, 0)
    nested = {a: dict.fromkeys(seconds, 0) for a in firsts}
    for a, b, n in found:
        by_a[a] = by_a.get(a, 0) + n
        by_b[b] = by_b.get(b, 0) + n
        nested.setdefault(a, {})[b] = n
    return by_a, by_b if seconds else dict(sorted(by_b.items())), nested


def build_report(settings, events: dict[tuple, float], shards: dict, wall_s: float,
                 batch: dict | None = None, *, pipeline: str, tasks: tuple[str, ...], splits: tuple[str, ...],
                 head: dict[str, Any] | None = None, sections: dict[str, Any] | None = None,
                 unit: str = "pairs", stage_rows: tuple[Stage, ...] = tuple(Stage),
                 criteria: tuple[str, ...] = CRITERIA) -> dict[str, Any]:
    """The run report; `inputs == {unit}_written + {unit}_rejected (+ {unit}_pending)` when
    nothing was lost (`unit`: what one input is, FiFa's pairs, FaceInstruct's items).  A
    pipeline adds its own keys: `head` after the options (e.g. the concept tree's version),
    `sections` after the ratings (e.g. concept counts); `stage_rows` are the rows of its
    per-stage table, `criteria` those of its rating histograms."""
    def total(*key: str) -> int:
        return int(sum(v for k, v in events.items() if k[:len(key)] == key))

    by_stage, by_reason, by_stage_reason = breakdown(events, "rejected")
    inputs, written, rejected, pending = total("inputs"), total(f"{unit}_written"), total("rejected"), total("pending")
    awaiting = bool(settings.llm_batch and pending)
    stages, remaining = [], inputs
    for stage in (s.value for s in stage_rows):
        dropped = by_stage.get(stage, 0)
        stages.append({"stage": stage, "in": remaining, "rejected": dropped, "out": remaining - dropped})
        remaining -= dropped
    by_task, by_split, by_task_split = breakdown(events, "samples", tasks, splits)
    seconds = {k[1]: round(v, 3) for k, v in sorted(events.items()) if k[0] == "seconds"}
    # The prompt and instruction templates the written pairs used, with how many pairs each.
    templates = [{"id": k[1], "version": k[2], "pairs": int(v)}
                 for k, v in sorted(events.items()) if k[0] == "template"]
    report = {
        "pipeline": pipeline,
        "status": "awaiting_batch" if awaiting else "complete",
        "facext_version": facext_version(),
        "input": settings.input_pattern,
        "manifests": list(settings.manifests),
        "output": settings.output,
        "limit": settings.limit,
        "options": settings.options(),
        "options_hash": settings.options_hash(),
        # What makes another run the same run (`pipelines.common.staging.differences`).
        "run_identity": settings.identity(),
        **(head or {}),
        "prompt_templates": templates,
        "inputs": inputs,
        # While batch answers are awaited no shard is written: the pairs done so far are
        # `pairs_ready`, and the run that collects the last answers writes them.
        f"{unit}_written": 0 if awaiting else written,
        f"{unit}_rejected": rejected,
        "adds_up": inputs == written + rejected + pending,
        "rejected": {"by_stage": by_stage, "by_reason": by_reason,
                     "by_stage_and_reason": by_stage_reason},
        "stages": stages,
        "samples": {"total": 0 if awaiting else sum(by_split.values()), "by_task": by_task,
                    "by_split": by_split, "by_task_and_split": by_task_split},
        # Shard rows: one per distinct image, holding the samples about it.
        "images": {"total": 0 if awaiting else total("images"),
                   "by_split": {split: 0 if awaiting else total("images", split) for split in splits}},
        "shards": shards,
        # Pairs whose finished analysis a cache held (a re-run, a resumed run) and those analysed now.
        "analysis_cache": {"hits": total("analysis_cache", "hits"), "misses": total("analysis_cache", "misses")},
        "llm": llm_report(settings, events, batch),
        "ratings": ratings_report(settings, events, criteria),
        **(sections or {}),
        "timings": {"wall_s": round(wall_s, 3),
                    "pairs_per_s": round(inputs / wall_s, 3) if wall_s > 0 else None,
                    "analysis_s_by_step_written_pairs": seconds},
    }
    if awaiting or pending:
        report[f"{unit}_pending"] = pending
        report[f"{unit}_ready"] = written
    return report


LLM_COUNTS = ("calls", "cache_hits", "cache_misses", "retries", "failed", "invalid_answers", "deferred",
              "input_tokens", "output_tokens")


def llm_report(settings, events: dict[tuple, float], batch: dict | None) -> dict[str, Any]:
    """Calls, cache, tokens and cost per backend and model (live calls at the standard
    price, collected batch answers at the batch price)."""
    prices = load_prices()
    by_model: dict[str, dict[str, Any]] = {}
    for config in settings.llm_configs:
        by_model.setdefault(f"{config.backend}/{config.model}", dict.fromkeys(LLM_COUNTS, 0))
    for key, value in sorted(events.items()):
        if key[0] == "llm":
            _, backend, model, name = key
            entry = by_model.setdefault(f"{backend}/{model}", dict.fromkeys(LLM_COUNTS, 0))
            entry[name] = entry.get(name, 0) + (round(value, 3) if name == "wait_s" else int(value))
    total_cost: float | None = 0.0
    for name, entry in by_model.items():
        model = name.split("/", 1)[1]
        entry["cost_usd"] = _round(prices.cost(model, entry["input_tokens"], entry["output_tokens"]))
        collected = (batch or {}).get(_slug(name))
        if collected:
            entry["batch"] = {**collected, "cost_usd": _round(prices.cost(
                model, collected.get("input_tokens", 0), collected.get("output_tokens", 0), batch=True))}
        for cost in (entry["cost_usd"], entry.get("batch", {}).get("cost_usd", 0.0)):
            total_cost = None if cost is None or total_cost is None else total_cost + cost
    totals = {name: sum(e[name] for e in by_model.values()) for name in LLM_COUNTS}
    return {
        "describer": settings.describer, "rater": settings.rater,
        **totals, "cost_usd": _round(total_cost) if by_model else 0.0,
        "prices_as_of": prices.as_of, "by_model": by_model,
    }


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "-", 1))


def _round(cost: float | None) -> float | None:
    return None if cost is None else round(cost, 6)


def ratings_report(settings, events: dict[tuple, float], criteria: tuple[str, ...] = CRITERIA) -> dict[str, Any]:
    """Histograms of the four criteria (scores 1..10) over every rated unit, kept or not."""
    histograms = {c: {str(score): 0 for score in range(1, 11)} for c in criteria}
    for key, value in events.items():
        if key[0] == "rating":
            histograms[key[1]][key[2]] += int(value)
    rated = sum(histograms["overall"].values())
    means = {c: round(sum(int(s) * n for s, n in h.items()) / rated, 3) if rated else None
             for c, h in histograms.items()}
    return {"rater": settings.rater, "min_rating": settings.min_rating, "pairs_rated": rated,
            "mean": means, "histograms": histograms}
