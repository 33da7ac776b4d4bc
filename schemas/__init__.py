"""Pydantic models of every record that crosses a stage boundary, and the mask codec."""

from schemas.analysis import ConceptCoverage, ConceptEvidence, PairAnalysis
from schemas.common import PairRejected, RejectReason, Stage
from schemas.masks import decode_mask, encode_mask

__all__ = ["ConceptCoverage", "ConceptEvidence", "PairAnalysis", "PairRejected", "RejectReason", "Stage",
           "decode_mask", "encode_mask"]
