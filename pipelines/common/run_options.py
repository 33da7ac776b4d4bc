"""The options of a run itself, shared by every pipeline: how much of the input to take,
whether a finished dataset built differently may be replaced, and where finished
per-item work is kept so that a re-run or a resumed run does not redo it."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.common.options import option


@dataclass(frozen=True)
class RunFlags:
    limit: int | None = option(None, "take only the first N manifest rows (manifests in name order, rows in file "
                               "order), to try a manifest before a long run", shown="every row")
    overwrite: bool = option(False, "replace a finished dataset in --output that was built from other inputs "
                             "or options (the same inputs and options simply run again, or resume)")
    analysis_cache: str | None = option(None, "finished per-input work by content (FiFa: the pair analysis; "
                                        "FaceInstruct: face crops and tracks), so a re-run or a resumed run redoes "
                                        "none of it; any Beam filesystem path",
                                        shown="analysis_cache/ beside --output")
    # Read by `expand_config` before Beam parses; declared so --help lists it and Beam accepts it.
    config: str | None = option(None, "YAML file of options; flags override it")
    # Read by `pipelines.common.logs.setup_pipeline` before Beam parses (-v is spelled --verbose there).
    verbose: bool = option(False, "show third-party warnings and native log lines (-v)")
