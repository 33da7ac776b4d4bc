"""The output folder of a FiFa-Instruct run: shards, rejected table and run report.

    OUTPUT/dataset_dict.json, train/, test/   datasets.load_from_disk(OUTPUT)
    OUTPUT/rejected/                          datasets.load_from_disk(OUTPUT/rejected)
    OUTPUT/run_report.json                    counts per stage, reason, task and split
    OUTPUT/_publish/                          `facext publish`'s staging (a new run removes it)

The pipeline writes parts and counts into OUTPUT/_tmp; `finalize` (in the driver, after
the run) names the shards, writes the metadata and the report, and removes _tmp.
"""

from __future__ import annotations

import json
import time
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from build_tools.shards import (
    WriteShards,
    estimated_buckets,
    finalize_split,
    join,
    parts_by_split,
    remove_tree,
)
from build_tools.version import facext_version
from schemas.fifa import SPLITS, TASKS, FifaSample, RejectedRow

# Samples a written pair gives: det x2, cls, 3 image-level, 6 region and 6 box (with
# their negatives).  Only sizes the shard buckets; the counts are measured.
SAMPLES_PER_PAIR = 18
STAGE_ORDER = ("manifest", "read", "face", "artifact", "concepts", "describe", "rate", "samples")
# Rejected rows share a pair id when a manifest repeats one; these fields tell them apart.
REJECTED_ORDER = ("pair_id", "manifest", "row", "stage", "reason", "detail")
# `_publish` is `facext publish`'s staging folder: made from this run, stale after a new one.
OWNED = ("train", "test", "rejected", "_tmp", "_publish", "dataset_dict.json", "run_report.json")


def _key_str(key: tuple) -> str:
    return json.dumps(list(key))


class _WriteEvents(beam.DoFn):
    def __init__(self, path: str):
        self.path = path

    def process(self, events: list):
        text = json.dumps(sorted([_key_str(k), v] for k, v in events))
        with FileSystems.create(self.path) as f:
            f.write(text.encode())


class _WriteBatchRequests(beam.DoFn):
    """Deferred LLM requests -> one JSONL file per bundle and backend/model, under
    BATCH/<slug>/requests/ (submitted by the driver after the run)."""

    def __init__(self, folder: str):
        self.folder = folder

    def start_bundle(self) -> None:
        self._files: dict[str, Any] = {}

    def process(self, element) -> None:
        import uuid

        slug, line = element
        if slug not in self._files:
            path = join(self.folder, slug, "requests", f"{uuid.uuid4().hex}.jsonl")
            self._files[slug] = FileSystems.create(path)
        self._files[slug].write((json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))

    def finish_bundle(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}


class FifaOutput:
    def __init__(self, settings):
        self.settings = settings
        self.root = settings.output
        self.tmp = join(self.root, "_tmp")
        self.spill_dir = join(self.tmp, "pairs")  # analysed pairs between analysis and describing
        # Batch-mode state: kept across runs (job ids cost money), never removed by `prepare`.
        self.batch_dir = join(self.root, "llm_batch")
        self.started = time.perf_counter()
        self.report: dict[str, Any] | None = None

    def prepare(self) -> None:
        """Remove what an earlier run of this pipeline left here (only its own files).

        Refuses a folder that holds `train/`, `test/` or `rejected/` without an earlier
        run's report: those were not written by this pipeline and are not ours to delete.
        """
        present = [name for name in OWNED if FileSystems.exists(join(self.root, name))]
        ours = FileSystems.exists(join(self.root, "run_report.json")) or FileSystems.exists(self.tmp)
        if present and not ours:
            raise SystemExit(f"--output {self.root} already holds {', '.join(present)} from something other "
                             f"than fifa_annotate; choose an empty or new folder")
        for name in present:
            remove_tree(join(self.root, name))
        if not FileSystems.exists(self.root):
            FileSystems.mkdirs(self.root)
        self.started = time.perf_counter()

    def progress_dir(self) -> str | None:
        """Where local workers count finished pairs for the progress line (local outputs
        only; under _tmp, so finalize removes it)."""
        return None if "://" in self.root else join(self.tmp, "progress")

    def write(self, samples, rejected, events: tuple, pending: tuple = ()) -> None:
        """Add the writing steps to the graph."""
        if pending:
            (pending | "All deferred requests" >> beam.Flatten()
             | "Write batch requests" >> beam.ParDo(_WriteBatchRequests(self.batch_dir)))
        max_rows = self.settings.max_rows_per_shard
        expected = self.settings.expected_inputs * SAMPLES_PER_PAIR
        test = self.settings.test_fraction
        buckets = {"train": estimated_buckets(expected * (1 - test), max_rows),
                   "test": estimated_buckets(expected * test, max_rows)}
        sample_parts = samples | "Write sample shards" >> WriteShards(
            join(self.tmp, "samples"), FifaSample, ("sample_id",), max_rows, "split", buckets)
        rejected_rows = rejected | "Rejected as rows" >> beam.Map(lambda r: r.model_dump())
        rejected_parts = rejected_rows | "Write rejected table" >> WriteShards(
            join(self.tmp, "rejected"), RejectedRow, REJECTED_ORDER, max_rows, None,
            {"all": estimated_buckets(0.1 * self.settings.expected_inputs, max_rows)})
        rejected_counts = rejected | "Count rejects" >> beam.Map(lambda r: (("rejected", r.stage, r.reason), 1))
        (
            (*events, sample_parts, rejected_parts, rejected_counts)
            | "All counts" >> beam.Flatten()
            | "Sum counts" >> beam.CombinePerKey(sum)
            | "Collect counts" >> beam.combiners.ToList()
            | "Write counts" >> beam.ParDo(_WriteEvents(join(self.tmp, "events.json")))
        )

    # --- after the run ------------------------------------------------------------------------

    def _events(self) -> dict[tuple, float]:
        path = join(self.tmp, "events.json")
        with FileSystems.open(path) as f:
            return {tuple(json.loads(k)): v for k, v in json.loads(f.read().decode())}

    def finalize(self) -> dict[str, Any]:
        from schemas.features import hf_features

        events = self._events()
        wall_s = time.perf_counter() - self.started
        if self.settings.llm_batch and sum(v for k, v in events.items() if k[0] == "pending"):
            # Pairs wait for batch answers: no shards yet (the run that finds every answer
            # in the cache writes them); the requests go to the providers now.
            self.submit_batches()
            self.report = build_report(self.settings, events, {}, wall_s, self.batch_report())
        else:
            parts = parts_by_split(events)
            sample_features, rejected_features = hf_features(FifaSample), hf_features(RejectedRow)
            shards = {}
            for split in SPLITS:
                shards[split] = finalize_split(join(self.root, split), join(self.tmp, "samples", split),
                                               parts.get(split, {}), sample_features, None)
            with FileSystems.create(join(self.root, "dataset_dict.json")) as f:
                f.write(json.dumps({"splits": list(SPLITS)}).encode())
            shards["rejected"] = finalize_split(join(self.root, "rejected"), join(self.tmp, "rejected", "all"),
                                                parts.get("all", {}), rejected_features, None)
            self.report = build_report(self.settings, events, shards, wall_s, self.batch_report())
        with FileSystems.create(join(self.root, "run_report.json")) as f:
            f.write((json.dumps(self.report, indent=2, ensure_ascii=False) + "\n").encode())
        remove_tree(self.tmp)
        return self.report

    # --- batch mode ---------------------------------------------------------------------------

    def _batch_configs(self) -> dict[str, Any]:
        return {config.slug: config for config in self.settings.llm_configs}

    def state_path(self, slug: str) -> str:
        return join(self.batch_dir, slug, "state.json")

    def submit_batches(self) -> None:
        from pipelines.llm.batch import submit

        for slug, config in self._batch_configs().items():
            pattern = join(self.batch_dir, slug, "requests", "*.jsonl")
            files = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
            if files:
                submit(config, sorted(files), self.state_path(slug))
                FileSystems.delete(files)

    def collect_batches(self) -> bool:
        """Fetch finished batch jobs into the cache; True when none is still running (the
        run can go on: it finishes, or submits the next round)."""
        from pipelines.llm.batch import collect, failed_path
        from pipelines.llm.cache import LlmCache

        configs = self._batch_configs()
        states = [self.state_path(slug) for slug in configs]
        if not any(FileSystems.exists(path) for path in states):
            raise SystemExit(f"--llm_batch collect: nothing was submitted into {self.batch_dir}; "
                             f"run with --llm_batch submit first")
        done = True
        for slug, config in configs.items():
            if FileSystems.exists(self.state_path(slug)):
                state = collect(config, self.state_path(slug), LlmCache(config.cache))
                done = done and not state.pending_jobs
        # Requests whose batch answer failed are not resubmitted: the next run rejects them.
        self.settings = self.settings.with_failed_keys(
            {slug: failed_path(self.state_path(slug)) for slug in configs})
        return done

    def batch_report(self) -> dict[str, Any] | None:
        if not self.settings.llm_batch:
            return None
        from pipelines.llm.batch import load_state

        out = {}
        for slug in self._batch_configs():
            if FileSystems.exists(self.state_path(slug)):
                out[slug] = load_state(self.state_path(slug)).report()
        return out

    def batch_summary(self) -> str:
        from pipelines.llm.batch import load_state

        lines = []
        for slug in self._batch_configs():
            if FileSystems.exists(self.state_path(slug)):
                lines.append(f"{slug}: {load_state(self.state_path(slug)).summary()}")
        return "\n".join(lines + ["some batch jobs are still running: run --llm_batch collect again later"])

    def summary(self) -> str:
        r = self.report
        if r is None:
            return "not finished"
        tasks = ", ".join(f"{t} {n}" for t, n in r["samples"]["by_task"].items())
        reasons = ", ".join(f"{k} {v}" for k, v in r["rejected"]["by_reason"].items()) or "none"
        return (f"{r['inputs']} inputs: {r['pairs_written']} pairs written, {r['pairs_rejected']} rejected "
                f"({reasons})\n{r['samples']['total']} samples ({tasks})\n"
                f"train {r['samples']['by_split'].get('train', 0)}, test {r['samples']['by_split'].get('test', 0)}"
                f" -> {self.root}  [{r['timings']['wall_s']:.1f} s]")


def _breakdown(events: dict[tuple, float], kind: str, firsts: tuple[str, ...] = (),
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
                 batch: dict | None = None) -> dict[str, Any]:
    """The run report; `inputs == pairs_written + pairs_rejected (+ pairs_pending)` when
    nothing was lost."""
    def total(kind: str) -> int:
        return int(sum(v for k, v in events.items() if k[0] == kind))

    by_stage, by_reason, by_stage_reason = _breakdown(events, "rejected")
    inputs, written, rejected, pending = total("inputs"), total("pairs_written"), total("rejected"), total("pending")
    awaiting = bool(settings.llm_batch and pending)
    stages, remaining = [], inputs
    for stage in STAGE_ORDER:
        dropped = by_stage.get(stage, 0)
        stages.append({"stage": stage, "in": remaining, "rejected": dropped, "out": remaining - dropped})
        remaining -= dropped
    by_task, by_split, by_task_split = _breakdown(events, "samples", TASKS, SPLITS)
    seconds = {k[1]: round(v, 3) for k, v in sorted(events.items()) if k[0] == "seconds"}
    # The prompt and instruction templates the written pairs used, with how many pairs each.
    templates = [{"id": k[1], "version": k[2], "pairs": int(v)}
                 for k, v in sorted(events.items()) if k[0] == "template"]
    report = {
        "pipeline": "fifa_annotate",
        "status": "awaiting_batch" if awaiting else "complete",
        "facext_version": facext_version(),
        "input": settings.input_pattern,
        "manifests": list(settings.manifests),
        "output": settings.output,
        "options": {**settings.shaping(), "max_rows_per_shard": settings.max_rows_per_shard,
                    "allow_absolute_paths": settings.allow_absolute_paths},
        "options_hash": settings.options_hash(),
        "fict_version": _tree_version(),
        "prompt_templates": templates,
        "inputs": inputs,
        # While batch answers are awaited no shard is written: the pairs done so far are
        # `pairs_ready`, and the run that collects the last answers writes them.
        "pairs_written": 0 if awaiting else written,
        "pairs_rejected": rejected,
        "adds_up": inputs == written + rejected + pending,
        "rejected": {"by_stage": by_stage, "by_reason": by_reason,
                     "by_stage_and_reason": by_stage_reason},
        "stages": stages,
        "samples": {"total": 0 if awaiting else sum(by_split.values()), "by_task": by_task,
                    "by_split": by_split, "by_task_and_split": by_task_split},
        "shards": shards,
        "llm": llm_report(settings, events, batch),
        "ratings": ratings_report(settings, events),
        "hallucination": hallucination_report(events),
        "concepts": concepts_report(events),
        "timings": {"wall_s": round(wall_s, 3),
                    "pairs_per_s": round(inputs / wall_s, 3) if wall_s > 0 else None,
                    "analysis_s_by_step_written_pairs": seconds},
    }
    if awaiting or pending:
        report["pairs_pending"] = pending
        report["pairs_ready"] = written
    return report


def _tree_version() -> int:
    from fict.tree import load_tree

    return load_tree().version


LLM_COUNTS = ("calls", "cache_hits", "cache_misses", "retries", "failed", "invalid_answers", "deferred",
              "input_tokens", "output_tokens")


def llm_report(settings, events: dict[tuple, float], batch: dict | None) -> dict[str, Any]:
    """Calls, cache, tokens and cost per backend and model (live calls at the standard
    price, collected batch answers at the batch price)."""
    from pipelines.llm.prices import load_prices

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
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "-", 1))


def _round(cost: float | None) -> float | None:
    return None if cost is None else round(cost, 6)


def ratings_report(settings, events: dict[tuple, float]) -> dict[str, Any]:
    """Histograms of the four criteria (scores 1..10) over every rated pair, kept or not."""
    from schemas.llm import CRITERIA

    histograms = {c: {str(score): 0 for score in range(1, 11)} for c in CRITERIA}
    for key, value in events.items():
        if key[0] == "rating":
            histograms[key[1]][key[2]] += int(value)
    rated = sum(histograms["overall"].values())
    means = {c: round(sum(int(s) * n for s, n in h.items()) / rated, 3) if rated else None
             for c, h in histograms.items()}
    return {"rater": settings.rater, "min_rating": settings.min_rating, "pairs_rated": rated,
            "mean": means, "histograms": histograms}


def concepts_report(events: dict[tuple, float]) -> dict[str, Any]:
    """Over the written pairs: pairs per flagged FICT node (every node, 0 when never
    flagged), and histograms in tenths of the coverage of flagged atomic concepts and of
    the changed fraction of the face."""
    from fict.tree import load_tree
    from pipelines.fifa_stages import COVERAGE_BINS

    flagged = {node.id: 0 for node in load_tree().nodes}
    bins = {"coverage": {}, "changed_face": {}}
    for key, value in events.items():
        if key[0] == "flagged":
            flagged[key[1]] = flagged.get(key[1], 0) + int(value)
        elif key[0] in bins:
            bins[key[0]][key[1]] = int(value)
    edges = [f"{b / COVERAGE_BINS:.1f}-{(b + 1) / COVERAGE_BINS:.1f}" for b in range(COVERAGE_BINS)]
    return {
        "flagged_pairs": flagged,
        "coverage_histogram": {e: bins["coverage"].get(str(b), 0) for b, e in enumerate(edges)},
        "changed_face_histogram": {e: bins["changed_face"].get(str(b), 0) for b, e in enumerate(edges)},
    }


def hallucination_report(events: dict[tuple, float]) -> dict[str, Any]:
    """How often texts name concepts that have no artifact (over every checked text)."""
    counts = {k[1]: int(v) for k, v in events.items() if k[0] == "hallucination"}
    texts, mentions = counts.get("texts", 0), counts.get("mentions", 0)
    return {
        "texts": texts, "texts_hallucinating": counts.get("texts_hallucinating", 0),
        "rate": round(counts.get("texts_hallucinating", 0) / texts, 6) if texts else 0.0,
        "mentions": mentions, "hallucinated_mentions": counts.get("hallucinated_mentions", 0),
        "mention_rate": round(counts.get("hallucinated_mentions", 0) / mentions, 6) if mentions else 0.0,
    }
