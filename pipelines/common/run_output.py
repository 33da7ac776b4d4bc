"""The output folder of a pipeline run: shards, rejected table and run report.

    OUTPUT/dataset_dict.json, train/, test/   datasets.load_from_disk(OUTPUT)
    OUTPUT/rejected/                          datasets.load_from_disk(OUTPUT/rejected)
    OUTPUT/run_report.json                    counts per stage, reason, task and split
    OUTPUT/_publish/                          `facext publish`'s staging (a new run removes it)

The pipeline writes parts and counts into OUTPUT/_tmp; `finalize` (in the driver, after
the run) names the shards, writes the metadata and the report, and removes _tmp.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.common.shards import (
    WriteShards,
    estimated_buckets,
    finalize_split,
    join,
    parts_by_split,
    remove_tree,
)
from pipelines.common.staging import (
    OWNED,
    commit,
    differences,
    grows_a_trial,
    read_report,
    recover,
    staging_path,
)


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


class RunOutput:
    """A run's output folder; a pipeline subclasses it with its record types and report.

    Subclasses set `pipeline` (the name in messages and the report), `sample_type` and
    `rejected_type` (pydantic rows: the Arrow schemas), `splits`, `rejected_order` (the
    rejected table's sort fields, telling any two rows apart), `sort_fields` (the shard
    rows' unique key, which orders them) and `rows_per_input` (only sizes the shard
    buckets), and implement `build_report`.
    """

    pipeline: str
    sample_type: type
    rejected_type: type
    splits: tuple[str, ...] = ("train", "test")
    rejected_order: tuple[str, ...]
    rows_per_input: int = 1
    sort_fields: tuple[str, ...] = ("sample_id",)
    unit: str = "pairs"  # what one input is, in the report's keys and the summary

    def __init__(self, settings):
        self.settings = settings
        self.output = settings.output  # where the finished dataset goes
        self.root = staging_path(settings.output)  # where this run writes it (`pipelines.common.staging`)
        self.tmp = join(self.root, "_tmp")
        self.spill_dir = join(self.tmp, "pairs")  # analysed pairs between analysis and describing
        # Batch-mode state: kept across runs (job ids cost money), never removed by `prepare`.
        self.batch_dir = join(self.output, "llm_batch")
        self.started = time.perf_counter()
        self.report: dict[str, Any] | None = None

    def prepare(self) -> None:
        """Check that the run may replace what OUTPUT holds, and start a fresh staging folder.

        Refuses (exit 2) a folder that holds `train/`, `test/` or `rejected/` without a
        run's report (not written by this pipeline, not ours to replace), and a finished
        dataset of another identity (inputs, limit, options) unless --overwrite.  OUTPUT
        itself is not touched until `finalize` commits the new dataset.
        """
        import sys

        done = recover(self.output)
        if done:
            print(f"{self.pipeline}: {done}", file=sys.stderr)
        present = [name for name in OWNED if FileSystems.exists(join(self.output, name))]
        old = read_report(self.output)
        if present and old is None:
            print(f"error: --output {self.output} already holds {', '.join(present)} from something other "
                  f"than {self.pipeline}; choose an empty or new folder", file=sys.stderr)
            raise SystemExit(2)
        new = {"run_identity": self.settings.identity(), "input": self.settings.input_pattern}
        changed = differences(old, new) if old else []
        if changed and grows_a_trial(old, new):  # try with --limit, then run it all: nothing is lost
            print(f"{self.pipeline}: replacing the --limit {old['run_identity']['limit']} trial run in "
                  f"{self.output}", file=sys.stderr)
        elif changed and not getattr(self.settings, "overwrite", False):
            print(f"error: --output {self.output} holds a finished dataset built from other inputs or options:\n"
                  + "".join(f"  {line}\n" for line in changed)
                  + "run again with --overwrite to replace it, or choose another --output", file=sys.stderr)
            raise SystemExit(2)
        remove_tree(self.root)  # what an interrupted run staged: its finished analysis is in the cache
        FileSystems.mkdirs(self.root)
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def interruptible(self, kept: Callable[[], str] | None = None):
        """Ctrl-C inside the block ends the run with one line (what was kept, and the
        command that resumes) and exit status 130, instead of a page of tracebacks.
        `kept()`, asked then, says what of the run's work survives (`12 finished analyses
        are kept in cache/`)."""
        import logging
        import os
        import shlex
        import signal
        import sys
        import threading

        interrupted = threading.Event()

        def on_ctrl_c(signum, frame):
            # What the runner logs while it unwinds (tracebacks of every step it was in) is
            # not for the person who pressed Ctrl-C: only the line below is.
            interrupted.set()
            logging.disable(logging.CRITICAL)
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the rest of this process
            raise KeyboardInterrupt

        # The in-process runner executes steps on this thread and wraps what they raise
        # (KeyboardInterrupt included) in a RuntimeError: the flag tells an interruption apart.
        # A process started with Ctrl-C ignored (a background job) keeps ignoring it.
        watch = threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
        before = signal.signal(signal.SIGINT, on_ctrl_c) if watch else None
        try:
            yield
        except BaseException:
            if not interrupted.is_set():
                raise
            try:
                survived = f"; {kept()}" if kept else ""
            except Exception:  # noqa: BLE001 - the line goes out whatever the count does
                survived = ""
            print(f"\n{self.pipeline}: interrupted. {self.output} is unchanged{survived}. "
                  f"Resume with: {shlex.join(_command_line())}", file=sys.__stderr__, flush=True)
            sys.stdout.flush()
            # Beam's worker threads and processes may still hold the interpreter; nothing
            # they do now matters (the staging folder is cleared by the next run).
            os._exit(130)
        finally:
            if watch:
                signal.signal(signal.SIGINT, before)

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
        sample_parts = samples | "Write sample shards" >> WriteShards(
            join(self.tmp, "samples"), self.sample_type, self.sort_fields, max_rows, "split", self.buckets())
        rejected_rows = rejected | "Rejected as rows" >> beam.Map(lambda r: r.model_dump())
        rejected_parts = rejected_rows | "Write rejected table" >> WriteShards(
            join(self.tmp, "rejected"), self.rejected_type, self.rejected_order, max_rows, None,
            {"all": estimated_buckets(0.1 * self.settings.expected_inputs, max_rows)})
        rejected_counts = rejected | "Count rejects" >> beam.Map(lambda r: (r.count_key(), 1))
        # Each stage's counts are summed where they are made (Beam lifts the combine into
        # the stage), so what meets in the Flatten is a few sums a bundle, not an event
        # a pair: the local runner holds a Flatten's inputs in memory.
        parts = (*events, sample_parts, rejected_parts, rejected_counts)
        (
            tuple(part | f"Sum counts {i}" >> beam.CombinePerKey(sum) for i, part in enumerate(parts))
            | "All counts" >> beam.Flatten()
            | "Sum counts" >> beam.CombinePerKey(sum)
            | "Collect counts" >> beam.combiners.ToList()
            | "Write counts" >> beam.ParDo(_WriteEvents(join(self.tmp, "events.json")))
        )

    def buckets(self) -> dict[str, int]:
        """Shard buckets per split, from the manifest's row count (train and test by
        `test_fraction`)."""
        max_rows = self.settings.max_rows_per_shard
        expected = self.settings.expected_inputs * self.rows_per_input
        test = self.settings.test_fraction
        return {"train": estimated_buckets(expected * (1 - test), max_rows),
                "test": estimated_buckets(expected * test, max_rows)}

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
            self.report = self.build_report(events, {}, wall_s, self.batch_report())
        else:
            parts = parts_by_split(events)
            sample_features, rejected_features = hf_features(self.sample_type), hf_features(self.rejected_type)
            shards = {}
            for split in self.splits:
                shards[split] = finalize_split(join(self.root, split), join(self.tmp, "samples", split),
                                               parts.get(split, {}), sample_features, None)
            with FileSystems.create(join(self.root, "dataset_dict.json")) as f:
                f.write(json.dumps({"splits": list(self.splits)}).encode())
            shards["rejected"] = finalize_split(join(self.root, "rejected"), join(self.tmp, "rejected", "all"),
                                                parts.get("all", {}), rejected_features, None)
            self.report = self.build_report(events, shards, wall_s, self.batch_report())
        with FileSystems.create(join(self.root, "run_report.json")) as f:
            f.write((json.dumps(self.report, indent=2, ensure_ascii=False) + "\n").encode())
        remove_tree(self.tmp)
        commit(self.root, self.output)
        return self.report

    def build_report(self, events: dict[tuple, float], shards: dict, wall_s: float,
                     batch: dict | None) -> dict[str, Any]:
        """The run report (`pipelines.common.run_report.build_report` and the pipeline's own sections)."""
        raise NotImplementedError

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
        unit = self.unit
        written = f"{r['inputs']} inputs: {r[f'{unit}_written']} {unit} written, {r[f'{unit}_rejected']} rejected"
        lines = [f"{written} ({reasons})"]
        cache = r.get("analysis_cache") or {}
        if cache.get("hits"):
            lines.append(f"analyses: {cache['hits']} taken from the cache, {cache.get('misses', 0)} new")
        lines.append(f"{r['samples']['total']} samples ({tasks})")
        train, test = (r["samples"]["by_split"].get(split, 0) for split in ("train", "test"))
        why = ""
        if not test and train and self.settings.test_fraction > 0:
            why = (f" (the split keeps each subject whole and puts about {self.settings.test_fraction:g} of "
                   f"the subjects in test: these inputs have too few)")
        lines.append(f"train {train}, test {test}{why} -> {self.output}  [{r['timings']['wall_s']:.1f} s]")
        return "\n".join([*lines, *self.summary_notes()])

    def summary_notes(self) -> list[str]:
        """A pipeline's own lines under the summary (what a user must not miss)."""
        return []


def _command_line() -> list[str]:
    """The command this process runs, as a person would type it again."""
    import os
    import sys

    argv = list(sys.argv)
    first = os.path.basename(argv[0]) if argv else ""
    if first in ("beam", "facext"):
        return [first, *argv[1:]]
    module = getattr(sys.modules.get("__main__"), "__spec__", None)
    if module is not None and module.name:  # python -m pipelines.fifa_annotate ...
        return ["python", "-m", module.name.removesuffix(".__main__"), *argv[1:]]
    return ["python", *argv]
