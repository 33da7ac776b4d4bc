"""The Beam shells of the stages: refusals and failures become rejected rows, not failed runs."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from pipelines.common.beam_tags import EVENTS, OK, REJECTED, event, split_outputs
from pipelines.common.stages import NAMESPACE, StageFn
from schemas.common import PairRejected, RejectReason, Stage
from schemas.fifa import PairInput, RejectedRow


def _pair(pair_id: str, **extra) -> PairInput:
    return PairInput(pair_id=pair_id, real=f"/data/{pair_id}_real.png", fake=f"/data/{pair_id}_fake.png",
                     manifest="m.jsonl", row=int(pair_id[-1]), **extra)


PAIRS = [_pair("good1", method="swap", subject_id="s1"), _pair("good2"), _pair("noface3", category="c"),
         _pair("boom4", method="m"), _pair("multi5")]


class FakeFaceStage(StageFn):
    """Passes good pairs, refuses one typed, fails on one, yields several for another."""

    stage = Stage.FACE

    def pair_of(self, element: PairInput) -> PairInput:
        return element

    def step(self, element: PairInput):
        if element.pair_id.startswith("good"):
            return element.pair_id.upper()
        if element.pair_id.startswith("noface"):
            raise PairRejected(RejectReason.NO_FACE, "no face in the real image")
        if element.pair_id.startswith("boom"):
            raise RuntimeError("boom")
        return self._several(element)

    @staticmethod
    def _several(element: PairInput):
        yield event(("seen", element.pair_id))
        yield "first"
        yield OK, "second"  # already tagged: passed through as is


def _summary(row: RejectedRow) -> tuple:
    return (row.pair_id, row.stage, row.reason, row.detail, row.real, row.method, row.category,
            row.subject_id, row.manifest, row.row)


def test_stage_shell_routes_results_refusals_and_failures():
    p = beam.Pipeline(runner=FnApiRunner())
    out = p | beam.Create(PAIRS) | "Stage" >> beam.ParDo(FakeFaceStage())
    parts = split_outputs(out, "Stage", (OK, REJECTED, EVENTS))
    assert_that(out | "Tags" >> beam.Map(lambda kv: kv[0]),
                equal_to([OK] * 4 + [REJECTED] * 2 + [EVENTS]), label="every output is tagged")
    assert_that(parts[OK], equal_to(["GOOD1", "GOOD2", "first", "second"]), label="ok")
    assert_that(parts[EVENTS], equal_to([(("seen", "multi5"), 1)]), label="events")
    assert_that(parts[REJECTED] | "Summaries" >> beam.Map(_summary), equal_to([
        ("noface3", "face", "no_face", "no face in the real image", "/data/noface3_real.png",
         None, "c", None, "m.jsonl", 3),
        ("boom4", "face", "internal_error", "RuntimeError: boom", "/data/boom4_real.png",
         "m", None, None, "m.jsonl", 4),
    ]), label="rejected")
    result = p.run()
    state = result.wait_until_finish()
    assert str(state).endswith("DONE")

    counters = {r.key.metric.name: r.committed
                for r in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]}
    assert counters == {"face_in": 5, "face_out": 3, "face_rejected": 1, "face_internal_error": 1}


def test_stage_class_attribute_names_the_stage():
    assert FakeFaceStage.stage.value == "face"
    rows = list(FakeFaceStage().process(PAIRS[2]))
    assert len(rows) == 1 and rows[0][0] == REJECTED
    assert rows[0][1].stage == FakeFaceStage.stage.value


def test_split_outputs_separates_tags():
    elements = [(OK, 1), (REJECTED, "r1"), (EVENTS, (("k",), 2)), (OK, 4), ("other", 9), (REJECTED, "r2")]
    with beam.Pipeline(runner=FnApiRunner()) as p:
        pcoll = p | beam.Create(elements)
        three = split_outputs(pcoll, "Three", (OK, REJECTED, EVENTS))
        assert set(three) == {OK, REJECTED, EVENTS}
        assert_that(three[OK], equal_to([1, 4]), label="three ok")
        assert_that(three[REJECTED], equal_to(["r1", "r2"]), label="three rejected")
        assert_that(three[EVENTS], equal_to([(("k",), 2)]), label="three events")
        default = split_outputs(pcoll, "Default")
        assert set(default) == {OK, REJECTED}
        assert_that(default[OK], equal_to([1, 4]), label="default ok")
        assert_that(default[REJECTED], equal_to(["r1", "r2"]), label="default rejected")
        only_other = split_outputs(pcoll, "Other", ("other",))
        assert_that(only_other["other"], equal_to([9]), label="other")
