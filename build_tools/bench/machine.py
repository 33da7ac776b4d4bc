"""What every benchmark records about the machine, and how it holds the machine still."""

from __future__ import annotations

import os
import platform


def pin_to_one_core() -> None:
    import cv2

    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def machine() -> dict:
    import cv2
    import mediapipe
    import numpy

    return {
        "python": platform.python_version(), "machine": platform.machine(),
        "processor": platform.processor(), "cpu_count": os.cpu_count(),
        "numpy": numpy.__version__, "opencv": cv2.__version__, "mediapipe": mediapipe.__version__,
    }


def peak_rss_mb() -> dict:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(own, 1), "peak_rss_children_mb": round(children, 1)}
