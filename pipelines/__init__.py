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
