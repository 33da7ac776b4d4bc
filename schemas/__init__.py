"""Pydantic models of every record that crosses a stage boundary."""

from schemas.analysis import (
    ConceptCoverage,
    ConceptEvidence,
    PairAnalysis,
    PairRejected,
    RejectReason,
    Stage,
)

__all__ = ["ConceptCoverage", "ConceptEvidence", "PairAnalysis", "PairRejected", "RejectReason", "Stage"]
