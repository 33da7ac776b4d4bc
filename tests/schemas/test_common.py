"""The records every pipeline shares: the rejected-row contract and the reject reasons."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from schemas.common import Rejected, RejectReason, Stage
from schemas.fifa import PairInput, RejectedRow


def test_a_rejected_row_class_without_the_contract_fields_is_refused():
    with pytest.raises(TypeError, match="must declare str fields reason"):
        class NoReason(Rejected):
            stage: str
            detail: str

    with pytest.raises(TypeError, match="detail"):
        class DetailNotStr(Rejected):
            stage: str
            reason: str
            detail: int


def test_a_pipeline_row_keeps_its_own_column_order():
    """FiFa's rejected table starts with pair_id (its columns are interface); a pydantic base
    holding the contract fields would have put them first."""
    class Other(Rejected):
        source_path: str
        stage: str
        reason: str
        detail: str

    assert list(Other.model_fields) == ["source_path", "stage", "reason", "detail"]
    assert list(RejectedRow.model_fields)[:4] == ["pair_id", "stage", "reason", "detail"]
    assert issubclass(RejectedRow, BaseModel) and issubclass(RejectedRow, Rejected)


def test_a_pair_makes_its_own_rejected_row():
    pair = PairInput(pair_id="p1", real="r.png", fake="f.png", method="", category="face swap",
                     subject_id="s", manifest="m.jsonl", row=3)
    row = pair.rejected(Stage.FACE.value, RejectReason.NO_FACE.value, "no face", hallucinated_concepts=["nose"])
    assert (row.pair_id, row.stage, row.reason, row.detail) == ("p1", "face", "no_face", "no face")
    assert (row.real, row.fake, row.method, row.category, row.subject_id, row.manifest, row.row) == (
        "r.png", "f.png", None, "face swap", "s", "m.jsonl", 3)
    assert row.hallucinated_concepts == ["nose"]
    assert row.count_key() == ("rejected", "face", "no_face")


def test_every_reason_has_its_stage_but_those_of_several_stages():
    """internal_error happens anywhere, the LLM failures in describe or rate; every other
    reason is decided by one stage."""
    unplaced = {r for r in RejectReason if r.stage is None}
    assert unplaced == {RejectReason.INTERNAL_ERROR, RejectReason.LLM_FAILED, RejectReason.LLM_INVALID_OUTPUT}
    assert {r.stage for r in RejectReason} - {None} <= set(Stage)
