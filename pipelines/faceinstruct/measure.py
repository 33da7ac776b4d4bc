"""Face measurements from 68 iBUG landmarks: what the offline describer may say, and what
the offline rater checks a description against.

The points are first put in a face frame: the eye line horizontal (the roll removed),
the outer eye corners one unit apart (inter-ocular units, "IOD"), so the numbers do not
depend on the crop size or on how the head is tilted in the image.  Each measure is a
plain geometric ratio; none is an emotion score.  The bands that words stand for
(`BANDS`) were read off the two packaged photos (a neutral and a smiling frontal face),
so they are coarse and set wide: a description claims a movement only when the face
shows it clearly, and says nothing in between.
"""

from __future__ import annotations

import math

import numpy as np

from schemas.faceinstruct import FaceMeasures

# iBUG-68 indices (0-based).
EYE_OUTER = (36, 45)
LEFT_EYE, RIGHT_EYE = range(36, 42), range(42, 48)
LEFT_BROW, RIGHT_BROW = range(17, 22), range(22, 27)
MOUTH_CORNERS = (48, 54)
LIP_MIDDLES = (51, 57)  # outer upper and lower lip, middle
INNER_GAP = ((61, 67), (62, 66), (63, 65))
NOSE_TIP, JAW_ENDS, CHIN = 30, (0, 16), 8
FRONTAL_NOSE_RATIO = 0.32

# (low, high): below low the measure is clearly low, above high clearly high, between
# them nothing is said.  Units as in `FaceMeasures`.
BANDS: dict[str, tuple[float, float]] = {
    # inner-lip gap / mouth width: the closed mouth of grace_hopper measures 0.003, the
    # astronaut's open smile (teeth showing) 0.17
    "mouth_opening": (-1.0, 0.10),
    # neutral 0.03 (grace_hopper), broad smile 0.13 (astronaut)
    "mouth_corner_lift": (-0.04, 0.07),
    # neutral brows 0.18-0.22 above the eye centres
    "brow_raise": (0.12, 0.30),
    # eye aspect 0.27-0.33 on open, relaxed eyes
    "eye_opening": (0.18, 0.40),
    "yaw": (-20.0, 20.0),
    "pitch": (-20.0, 20.0),
    "roll": (-15.0, 15.0),
}

def face_frame(points: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(points in the face frame, roll in degrees, inter-ocular distance in the input's units)."""
    pts = np.asarray(points, np.float64)
    a, b = pts[EYE_OUTER[0]], pts[EYE_OUTER[1]]
    dx, dy = b - a
    iod = math.hypot(dx, dy)
    if iod <= 1e-9:
        raise ValueError("the outer eye corners coincide")
    roll = math.degrees(math.atan2(dy, dx))
    c, s = dx / iod, dy / iod
    rot = np.array([[c, s], [-s, c]])  # rotates the eye line onto the x axis
    centred = (pts - (a + b) / 2) @ rot.T / iod
    return centred, roll, iod


def measure(points: np.ndarray) -> FaceMeasures:
    """The measures of one frame's 68 points (any pixel frame, y down)."""
    f, roll, _ = face_frame(points)
    width = np.linalg.norm(f[MOUTH_CORNERS[1]] - f[MOUTH_CORNERS[0]])
    gap = np.mean([np.linalg.norm(f[u] - f[d]) for u, d in INNER_GAP])
    lip_centre_y = np.mean(f[list(LIP_MIDDLES), 1])
    corner_lift = lip_centre_y - np.mean(f[list(MOUTH_CORNERS), 1])  # y down: corners above -> positive
    eye_centres = [f[list(LEFT_EYE)].mean(0), f[list(RIGHT_EYE)].mean(0)]
    brows = [f[list(LEFT_BROW)].mean(0), f[list(RIGHT_BROW)].mean(0)]
    brow_raise = np.mean([e[1] - b[1] for e, b in zip(eye_centres, brows, strict=True)])

    def aspect(eye: range) -> float:
        p = f[list(eye)]
        return (np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2 * np.linalg.norm(p[0] - p[3]))

    left, right = f[JAW_ENDS[0]], f[JAW_ENDS[1]]
    half = (right[0] - left[0]) / 2
    yaw = math.degrees(math.asin(np.clip((f[NOSE_TIP, 0] - (left[0] + right[0]) / 2) / half, -1, 1))) \
        if half > 1e-6 else None
    # Pitch from where the nose tip sits between the eye line (y 0) and the chin: 0.30-0.33
    # of the way on the frontal photos; chin-up shortens the nose-to-eye span.  A coarse
    # angle: the describer names only a clear tilt.
    chin = f[CHIN, 1]
    ratio = f[NOSE_TIP, 1] / chin if chin > 1e-6 else None
    pitch = math.degrees(math.asin(np.clip((FRONTAL_NOSE_RATIO - ratio) / FRONTAL_NOSE_RATIO, -1, 1))) \
        if ratio is not None else None
    return FaceMeasures(
        mouth_opening=_round(gap / width) if width > 1e-6 else None,
        mouth_corner_lift=_round(corner_lift),
        brow_raise=_round(brow_raise),
        eye_opening=_round((aspect(LEFT_EYE) + aspect(RIGHT_EYE)) / 2),
        yaw=_round(yaw, 1), pitch=_round(pitch, 1), roll=_round(roll, 1),
    )


def _round(value, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def level(measures: FaceMeasures, name: str) -> str | None:
    """`low`, `high` or None (within the band, or not measured) for one measure."""
    value = getattr(measures, name)
    if value is None:
        return None
    low, high = BANDS[name]
    return "low" if value < low else "high" if value > high else None
