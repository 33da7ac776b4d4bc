"""Quiet by default: stderr holds facext's own lines (the progress line, the run summary,
errors and our warnings); third-party warnings and the native libraries' log lines appear
only with `--verbose` (`-v`) or FACEXT_VERBOSE=1, which worker processes inherit.

Each kind of noise needs its own lever:

* Python warnings (google-api-core's FutureWarning on every import of the Google clients):
  `warnings` filters in this process; PYTHONWARNINGS for the processes it starts, because
  Beam's local workers import the Google clients before any facext code runs there.
* Python loggers of libraries (apache_beam, datasets, absl, ...): held to ERROR.
  apache_beam logs its crcmod warning on the root logger while it is imported, which for
  `python -m pipelines.fifa_annotate` is before `run()`: `quiet_imports` (called by
  `pipelines/__init__.py`) drops what installed libraries log on the root logger below ERROR.
* Beam's local worker processes (`--direct_running_mode multi_processing`) set their log
  level from `--default_sdk_harness_log_level` before our code is imported there; it is ERROR
  for a quiet local run (ours WARNING, by `--sdk_harness_log_level_overrides`).  Their
  "Discarding unparseable args" listed our options only because the worker's own parser
  does not know them (the driver parsed them; the steps carry them).  What such a worker
  would print while it imports apache_beam (the crcmod line) comes before any setting can
  reach it: crcmod is a dependency for that reason.
* Native code writing straight to file descriptor 2 (mediapipe's absl and TFLite, libpng,
  OpenCV): `quiet_native_stderr` around those calls (it lives in `pipelines.vision`, which
  calls them); OPENCV_LOG_LEVEL for processes not yet started.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import yaml

from pipelines.vision.native_stderr import VERBOSE_ENV, quiet_native_stderr, verbose_requested

__all__ = ["VERBOSE_ENV", "quiet_imports", "quiet_native_stderr", "setup_command", "setup_logging",
           "setup_pipeline", "verbose_requested", "wants_verbose", "with_log_flags"]

OUR_PACKAGES = ("pipelines", "build_tools", "fict", "schemas", "prompts", "training")
_OURS = rf"(?:{'|'.join(OUR_PACKAGES)})(?:\.|$)"
# Warnings of every module but ours and the script's own (`__main__`): the libraries'.
_LIBRARIES = rf"(?!__main__$)(?!{_OURS})"
# The libraries whose loggers talk during a run, held to ERROR.  The root logger keeps its
# level: our own warnings (an upload retried, a batch answer unreadable) stay, and a test's
# caplog still sees our records at any level.
LIBRARY_LOGGERS = ("apache_beam", "absl", "datasets", "google", "urllib3")
# Read by processes started from here (Beam's workers, `facext bench`'s runs) and by OpenCV
# when it loads.
QUIET_ENVIRONMENT = {"PYTHONWARNINGS": "ignore", "OPENCV_LOG_LEVEL": "ERROR"}
VERBOSE_FLAGS = ("-v", "--verbose")
LOCAL_RUNNERS = (None, "DirectRunner", "direct", "FnApiRunner")
WORKER_LOG_LEVEL = "--default_sdk_harness_log_level"
WORKER_LOG_OVERRIDES = "--sdk_harness_log_level_overrides"


class _LibraryRootRecords(logging.Filter):
    """Drops what an installed library logs straight on the root logger below ERROR
    (apache_beam's `logging.warning("crcmod package not found ...")` while it is imported)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or record.name != "root":
            return True
        return not {"site-packages", "dist-packages"} & set(Path(record.pathname).parts)


class _Quiet:
    """What quieting changed in this process, so that `setup_logging(verbose=True)` can
    give it all back (a verbose run after a quiet one in the same process)."""

    def __init__(self):
        self.filters: list[tuple] = []  # entries of warnings.filters
        self.root_filter: _LibraryRootRecords | None = None
        self.levels: dict[str, int] = {}  # logger name -> its level before
        self.environment: list[str] = []  # variables set here

    def imports(self) -> None:
        if not self.filters or any(entry not in warnings.filters for entry in self.filters):
            # (again when someone reset the filters: `warnings.catch_warnings` on its way out)
            warnings.filterwarnings("ignore", module=_LIBRARIES)
            # Ours show even where PYTHONWARNINGS=ignore came down from a quiet parent (a worker).
            warnings.filterwarnings("default", module=_OURS)
            self.filters = warnings.filters[:2]
        if self.root_filter is None:
            self.root_filter = _LibraryRootRecords()
            logging.getLogger().addFilter(self.root_filter)

    def everything(self) -> None:
        self.imports()
        for name, value in QUIET_ENVIRONMENT.items():
            if name not in os.environ:
                os.environ[name] = value
                self.environment.append(name)
        for name in LIBRARY_LOGGERS:
            logger = logging.getLogger(name)
            self.levels.setdefault(name, logger.level)
            logger.setLevel(logging.ERROR)

    def undo(self) -> None:
        for entry in self.filters:
            if entry in warnings.filters:
                warnings.filters.remove(entry)
        if self.filters:
            warnings._filters_mutated()  # forget warnings already judged under the filters
        if self.root_filter is not None:
            logging.getLogger().removeFilter(self.root_filter)
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)
        for name in self.environment:
            os.environ.pop(name, None)
        self.__init__()


_QUIET = _Quiet()


def quiet_imports() -> None:
    """What must hold before the libraries are imported: their warnings ignored (ours
    still shown) and their records on the root logger dropped.  Nothing with FACEXT_VERBOSE."""
    if not verbose_requested():
        _QUIET.imports()


def setup_logging(verbose: bool = False) -> None:
    """Quiet (the module's levers), or with `verbose` (or FACEXT_VERBOSE) everything as the
    libraries print it, in this process and in those it starts.  Call it again to change."""
    if verbose or verbose_requested():
        os.environ[VERBOSE_ENV] = "1"
        _QUIET.undo()
    else:
        _QUIET.everything()


def wants_verbose(argv: list[str]) -> bool:
    """-v or --verbose on the command line (or `verbose: true` in its --config file), or
    FACEXT_VERBOSE."""
    return (any(arg in VERBOSE_FLAGS for arg in argv) or _config(argv).get("verbose") is True
            or verbose_requested())


def setup_command(argv: list[str] | None = None) -> list[str]:
    """For a tool's `main`: -v/--verbose, anywhere on the line, decides (`setup_logging`)
    and is taken out; the rest of the line is returned for the tool's parser."""
    argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging(wants_verbose(argv))
    return [arg for arg in argv if arg not in VERBOSE_FLAGS]


def setup_pipeline(argv: list[str] | None = None) -> list[str]:
    """For a pipeline's `run(argv)`, first thing: sets up logging from the command line and
    returns it with -v spelled --verbose (the pipeline's option) and, for a quiet local run,
    Beam's worker log level at ERROR (ours at WARNING) unless the line sets them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = wants_verbose(argv)
    setup_logging(verbose)
    return with_log_flags(argv, verbose)


def with_log_flags(argv: list[str], verbose: bool) -> list[str]:
    """A pipeline's command line with -v spelled --verbose and, when quiet and local, the
    worker log flags added (what `setup_pipeline` returns)."""
    argv = ["--verbose" if arg == "-v" else arg for arg in argv]
    if verbose or _runner(argv) not in LOCAL_RUNNERS:
        return argv
    given = {arg.partition("=")[0] for arg in argv} | {f"--{key}" for key in _config(argv)}
    if WORKER_LOG_LEVEL not in given:
        argv.append(f"{WORKER_LOG_LEVEL}=ERROR")
    if WORKER_LOG_OVERRIDES not in given:
        ours = ",".join(f'"{name}":"WARNING"' for name in OUR_PACKAGES)
        argv.append(f"{WORKER_LOG_OVERRIDES}={{{ours}}}")
    return argv


def _runner(argv: list[str]) -> str | None:
    runner = _flag(argv, "--runner")
    return runner if runner is not None else _config(argv).get("runner")


def _flag(argv: list[str], flag: str) -> str | None:
    """The value of `flag` on the line (the last one, as argparse takes it)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.partition("=")[2]
    return value


def _config(argv: list[str]) -> dict:
    """The mapping of the line's --config file, names without dashes; {} when there is none or
    it cannot be read (the pipeline's own parser reports that)."""
    path = _flag(argv, "--config")
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(key).lstrip("-").replace("-", "_"): value for key, value in data.items()}
