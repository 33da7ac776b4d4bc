"""The installed facext version, as recorded in every sample's provenance."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def facext_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("facext")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"
