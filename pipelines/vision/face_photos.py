"""Real face photos that ship inside installed packages (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def grace_hopper_path() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def grace_hopper() -> np.ndarray:
    from PIL import Image

    with Image.open(grace_hopper_path()) as im:
        return np.asarray(im.convert("RGB"))


PHOTOS = {"astronaut": astronaut, "grace_hopper": grace_hopper}


def load_photo(name: str) -> np.ndarray:
    return PHOTOS[name]()
