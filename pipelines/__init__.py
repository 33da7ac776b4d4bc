"""Per-pair analysis stages and the Beam pipelines that wrap them."""

from pipelines.common.logs import quiet_imports

# Before any library is imported (by the driver, and by each worker that imports our steps):
# google-api-core's FutureWarning on every import, apache_beam's crcmod warning and the like
# are not for a facext user to act on (`pipelines.common.logs`; --verbose shows them).
quiet_imports()


def _worker_quiet_on_ctrl_c() -> None:
    """Beam's local worker processes share the terminal's process group, so Ctrl-C reaches
    them too, and each would print a traceback.  The driver alone reports it (one line);
    a worker, which imports this package to run our steps (on a thread of its own, so it
    cannot change the signal's handler), ends on it without a traceback."""
    import sys

    if not (sys.argv and sys.argv[0].endswith("sdk_worker_main.py")):
        return
    shown = sys.excepthook

    def quiet(kind, value, tb):
        if not issubclass(kind, KeyboardInterrupt):
            shown(kind, value, tb)

    sys.excepthook = quiet


_worker_quiet_on_ctrl_c()


def _entry_name() -> str | None:
    """The name a facext command goes by when this process is one (`beam run FILE`,
    `facext ...`, `python -m pipelines.X`), else None (a library user's program, a test)."""
    import os
    import sys

    argv = getattr(sys, "orig_argv", [])
    if "-m" in argv[:-1]:
        module = argv[argv.index("-m") + 1]
        return module.rpartition(".")[2] if module.split(".")[0] in ("pipelines", "build_tools") else None
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    if program == "beam" and len(sys.argv) > 2 and sys.argv[1] == "run":
        return os.path.splitext(os.path.basename(sys.argv[2]))[0]
    return program if program in ("beam", "facext") else None


def _entry_quiet_on_ctrl_c() -> None:
    """Ctrl-C before a run watches for it (while the libraries import, the options are read,
    the staging folder is set up) ends a facext command with one line, not an import
    traceback.  Nothing a run has finished is touched before then: the line says so.  The
    exit status stays Python's for Ctrl-C (130)."""
    import sys

    name = _entry_name()
    if name is None:
        return
    shown = sys.excepthook

    def quiet(kind, value, tb):
        if not issubclass(kind, KeyboardInterrupt):
            return shown(kind, value, tb)
        kept = "" if name == "facext" else "; a finished dataset in its output folder is unchanged"
        print(f"\n{name}: interrupted (Ctrl-C){kept}.", file=sys.stderr, flush=True)

    sys.excepthook = quiet


_entry_quiet_on_ctrl_c()
