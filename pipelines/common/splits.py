"""Train/test by identity: the same subject (or item, when none is known) always lands in
the same split, in every process and on every machine."""

from __future__ import annotations

import hashlib


def stable_hash(*parts: object) -> int:
    """64-bit hash of the parts; the same in every process (unlike `hash`)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def identity_split(key: str, test_fraction: float) -> str:
    """`test` for a stable `test_fraction` of identity keys, `train` for the rest."""
    return "test" if stable_hash("split", key) / 2**64 < test_fraction else "train"
