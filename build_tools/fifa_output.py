"""The output folder of a FiFa-Instruct run: shards, rejected table and run report.

    OUTPUT/dataset_dict.json, train/, test/   datasets.load_from_disk(OUTPUT)
    OUTPUT/rejected/                          datasets.load_from_disk(OUTPUT/rejected)
    OUTPUT/run_report.json                    counts per stage, reason, task and split

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
STAGE_ORDER = ("manifest", "read", "face", "artifact", "concepts", "describe", "samples")
# Rejected rows share a pair id when a manifest repeats one; these fields tell them apart.
REJECTED_ORDER = ("pair_id", "manifest", "row", "stage", "reason", "detail")
OWNED = ("train", "test", "rejected", "_tmp", "dataset_dict.json", "run_report.json")


def _key_str(key: tuple) -> str:
    return json.dumps(list(key))


class _WriteEvents(beam.DoFn):
    def __init__(self, path: str):
        self.path = path

    def process(self, events: list):
        text = json.dumps(sorted([_key_str(k), v] for k, v in events))
        with FileSystems.create(self.path) as f:
            f.write(text.encode())


class FifaOutput:
    def __init__(self, settings):
        self.settings = settings
        self.root = settings.output
        self.tmp = join(self.root, "_tmp")
        self.spill_dir = join(self.tmp, "pairs")  # analysed pairs between analysis and describing
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

    def write(self, samples, rejected, events: tuple) -> None:
        """Add the writing steps to the graph."""
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
        self.report = build_report(self.settings, events, shards, time.perf_counter() - self.started)
        with FileSystems.create(join(self.root, "run_report.json")) as f:
            f.write((json.dumps(self.report, indent=2, ensure_ascii=False) + "\n").encode())
        remove_tree(self.tmp)
        return self.report

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


def build_report(settings, events: dict[tuple, float], shards: dict, wall_s: float) -> dict[str, Any]:
    """The run report; `inputs == pairs_written + pairs_rejected` when nothing was lost."""
    def total(kind: str) -> int:
        return int(sum(v for k, v in events.items() if k[0] == kind))

    by_stage, by_reason, by_stage_reason = _breakdown(events, "rejected")
    inputs, written, rejected = total("inputs"), total("pairs_written"), total("rejected")
    stages, remaining = [], inputs
    for stage in STAGE_ORDER:
        dropped = by_stage.get(stage, 0)
        stages.append({"stage": stage, "in": remaining, "rejected": dropped, "out": remaining - dropped})
        remaining -= dropped
    by_task, by_split, by_task_split = _breakdown(events, "samples", TASKS, SPLITS)
    seconds = {k[1]: round(v, 3) for k, v in sorted(events.items()) if k[0] == "seconds"}
    return {
        "pipeline": "fifa_annotate",
        "facext_version": facext_version(),
        "input": settings.input_pattern,
        "manifests": list(settings.manifests),
        "output": settings.output,
        "options": {**settings.shaping(), "max_rows_per_shard": settings.max_rows_per_shard,
                    "allow_absolute_paths": settings.allow_absolute_paths},
        "options_hash": settings.options_hash(),
        "inputs": inputs,
        "pairs_written": written,
        "pairs_rejected": rejected,
        "adds_up": inputs == written + rejected,
        "rejected": {"by_stage": by_stage, "by_reason": by_reason,
                     "by_stage_and_reason": by_stage_reason},
        "stages": stages,
        "samples": {"total": sum(by_split.values()), "by_task": by_task, "by_split": by_split,
                    "by_task_and_split": by_task_split},
        "shards": shards,
        "timings": {"wall_s": round(wall_s, 3),
                    "pairs_per_s": round(inputs / wall_s, 3) if wall_s > 0 else None,
                    "analysis_s_by_step_written_pairs": seconds},
    }
