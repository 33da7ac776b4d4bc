"""The test suite; its folders mirror the package tree (tests/pipelines/fifa/... tests
pipelines/fifa/...)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the repository root
