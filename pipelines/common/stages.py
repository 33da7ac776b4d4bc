"""The Beam shell of a stage, shared by every pipeline.

A shell holds the library object of its stage (set up once per worker), runs it on one
element, counts what happened (Beam metrics `facext:STAGE_in/out/rejected`), and sends an
input the stage refuses to the `rejected` output as its pipeline's rejected row (the
input record's `rejected(stage, reason, detail)`): with its typed reason, or with
`internal_error` and the exception when the library itself fails, so one bad sample
never stops a run.  Outputs are `(tag, value)` pairs (see `pipelines.common.beam_tags`).
"""

from __future__ import annotations

import logging
import traceback
import types
from functools import wraps

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.common.beam_tags import OK, PENDING, REJECTED, TAGS, event
from schemas.common import PairRejected, RejectReason, Stage

NAMESPACE = "facext"
log = logging.getLogger(__name__)


class StageFn(beam.DoFn):
    """A stage over one pair: `step(element)` returns the next element, or yields several
    (and `event(...)` counts), and raises `PairRejected` to refuse the pair."""

    stage: Stage

    def __init__(self) -> None:
        name = self.stage.value
        self.seen = Metrics.counter(NAMESPACE, f"{name}_in")
        self.passed = Metrics.counter(NAMESPACE, f"{name}_out")
        self.refused = Metrics.counter(NAMESPACE, f"{name}_rejected")
        self.failed = Metrics.counter(NAMESPACE, f"{name}_internal_error")

    def pair_of(self, element):
        """The input record an element carries: what a rejected row is made from
        (`record.rejected(stage, reason, detail)`)."""
        return element.pair

    def step(self, element):
        raise NotImplementedError

    def attempt(self, element) -> tuple[str, list]:
        """Run the step: ("passed", its tagged outputs), or ("refused" | "failed", the
        rejected row).  Touches no Beam state, so it may run on any thread."""
        pair = self.pair_of(element)
        try:
            out = self.step(element)
            results = list(out) if _is_generator(out) or isinstance(out, list) else [out]
        except PairRejected as exc:
            row = pair.rejected(self.stage_of(exc.reason), exc.reason.value, exc.detail, **exc.fields)
            return "refused", [(REJECTED, row)]
        except self.passed_up():
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must cost one pair, not the run
            log.error("%s failed on pair %s:\n%s", self.stage.value, pair.pair_id, traceback.format_exc())
            detail = f"{type(exc).__name__}: {exc}"
            return "failed", [(REJECTED, pair.rejected(self.stage.value, RejectReason.INTERNAL_ERROR.value,
                                                        detail))]
        outputs = [result if _is_tagged(result) else (OK, result) for result in results]
        return ("refused" if any(tag == REJECTED for tag, _ in outputs) else "passed"), outputs

    def stage_of(self, reason: RejectReason) -> str:
        """The stage a refusal is counted in: this one (a stage that does the work of
        several, like reading and finding faces in one pass over a video, names the
        reason's own stage)."""
        return self.stage.value

    def passed_up(self) -> tuple[type[BaseException], ...]:
        """Exceptions that are not failures of the pair (a subclass handles them)."""
        return ()

    def count(self, outcome: str) -> None:
        self.seen.inc()
        counter = {"passed": self.passed, "refused": self.refused, "failed": self.failed}.get(outcome)
        if counter is not None:
            counter.inc()

    def process(self, element):
        outcome, outputs = self.attempt(element)
        self.count(outcome)
        yield from outputs


class ConcurrentStage(StageFn):
    """A stage over a batch of pairs, `concurrency` of them at a time.

    Model calls spend their time waiting on the network, so the pairs of a batch run on a
    thread pool (the LLM client bounds the calls in flight and their rate).  Batches, not
    single elements buffered across `process` calls, because outputs emitted from
    `finish_bundle` are lost on some runners (Dask).  The OK results of a batch leave as
    one list when `keep_batches`, else one by one.
    """

    keep_batches = False

    def __init__(self, concurrency: int = 1) -> None:
        super().__init__()
        self.concurrency = concurrency
        self.pool = None

    def setup(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        if self.concurrency > 1:
            self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"facext-{self.stage.value}")

    def pair_of(self, element):
        return element[0].pair if isinstance(element, tuple) else element.pair

    def process(self, batch: list):
        results = self.pool.map(self.attempt, batch) if self.pool else map(self.attempt, batch)
        kept = []
        for outcome, outputs in results:
            self.count(outcome)
            for tag, value in outputs:
                if tag == OK and self.keep_batches:
                    kept.append(value)
                else:
                    yield tag, value
        yield from self.after_batch()
        if kept:
            yield OK, kept

    def after_batch(self):
        """Events to emit once a batch is done."""
        return ()

    def teardown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def _is_tagged(value) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and value[0] in TAGS


def _is_generator(value) -> bool:
    return isinstance(value, types.GeneratorType)


def llm_errors_as_rejections(fn):
    """Turn the LLM client's failures into typed rejections of the pair."""
    @wraps(fn)
    def wrapped(*args, **kwargs):
        from pipelines.llm.client import LlmFailed, LlmInvalid

        try:
            return fn(*args, **kwargs)
        except LlmFailed as exc:
            raise PairRejected(RejectReason.LLM_FAILED, str(exc)) from None
        except LlmInvalid as exc:
            raise PairRejected(RejectReason.LLM_INVALID_OUTPUT, str(exc)) from None

    return wrapped


class LlmStage(ConcurrentStage):
    """A stage that may ask a model: one shared client per process, its usage counted."""

    def __init__(self, llm) -> None:
        super().__init__(llm.concurrency if llm is not None else 1)
        self.llm = llm
        self.client = None

    def setup(self) -> None:
        super().setup()
        if self.llm is not None:
            from pipelines.llm.config import shared_client

            self.client = shared_client(self.llm)

    def passed_up(self):
        from pipelines.llm.client import LlmDeferred

        return (LlmDeferred,)

    def attempt(self, element):
        from pipelines.llm.client import LlmDeferred

        try:
            return super().attempt(element)
        except LlmDeferred as exc:  # batch submit: the pair waits for the batch's answers
            backend, model = self.client.backend, self.client.model
            lines = [(PENDING, (self.llm.slug, backend.batch_line(r, r.key(backend.name, model))))
                     for r in exc.requests]
            return "pending", [*lines, event(("pending", self.stage.value))]

    def after_batch(self):
        if self.client is not None:
            for name, amount in self.client.stats.drain().items():
                yield event(("llm", self.client.name, self.client.model, name), amount)
