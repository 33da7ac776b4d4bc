"""68-point iBUG landmarks: the mesh projection measured on real photos, FAN's guard."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from fict.canonical import mirror_index
from pipelines.vision.face_photos import PHOTOS
from pipelines.vision.faces import FaceAnalyzer, FaceRejected
from pipelines.vision.landmarks68 import (
    FAN_WEIGHT_URLS,
    FAN_WEIGHTS,
    IBUG68_PARTS,
    MESH_TO_IBUG68,
    S3FD_WEIGHTS,
    FanLandmarker,
    LandmarkerUnavailable,
    ibug68_from_mesh,
    ibug68_normalised,
    torch_hub_checkpoints_dir,
)
from schemas.common import RejectReason

# iBUG point -> its left/right partner (midline points are their own).
IBUG_MIRROR = (
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65]
)


@pytest.fixture(scope="module")
def faces():
    """name -> (FaceGeometry, 68 points in original pixels), one analyzer for the module."""
    with FaceAnalyzer() as fa:
        out = {}
        for name, load in PHOTOS.items():
            geometry = fa.geometry(load())
            out[name] = (geometry, ibug68_from_mesh(geometry.landmarks))
    return out


def eye_distance(p: np.ndarray) -> float:
    return float(np.linalg.norm(p[45] - p[36]))


def shoelace(poly: np.ndarray) -> float:
    """Twice the signed area; > 0 for clockwise on screen (y down)."""
    x, y = poly[:, 0], poly[:, 1]
    return float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


# -- the mapping itself ----------------------------------------------------------------


def test_mapping_is_68_distinct_surface_vertices_mirror_symmetric():
    idx = np.asarray(MESH_TO_IBUG68)
    assert idx.shape == (68,) and len(set(idx.tolist())) == 68
    assert idx.min() >= 0 and idx.max() < 468
    assert sorted(i for part in IBUG68_PARTS.values() for i in part) == list(range(68))
    # A left/right iBUG pair must be a left/right pair of mesh vertices.
    mirror = mirror_index()
    assert [int(mirror[idx[i]]) for i in range(68)] == [int(idx[j]) for j in IBUG_MIRROR]


def test_mapping_uses_mediapipe_groups():
    from mediapipe.python.solutions import face_mesh_connections as fmc

    def vertices(edges):
        return {v for edge in edges for v in edge}

    idx = MESH_TO_IBUG68
    assert set(idx[0:17]) <= vertices(fmc.FACEMESH_FACE_OVAL)
    # mediapipe "RIGHT" is the subject's right = image left.
    assert set(idx[17:22]) <= vertices(fmc.FACEMESH_RIGHT_EYEBROW)
    assert set(idx[22:27]) <= vertices(fmc.FACEMESH_LEFT_EYEBROW)
    assert set(idx[36:42]) <= vertices(fmc.FACEMESH_RIGHT_EYE)
    assert set(idx[42:48]) <= vertices(fmc.FACEMESH_LEFT_EYE)
    assert set(idx[48:68]) <= vertices(fmc.FACEMESH_LIPS)


def test_rejects_non_mesh_input():
    with pytest.raises(ValueError):
        ibug68_from_mesh(np.zeros((68, 2)))
    with pytest.raises(ValueError):
        ibug68_normalised(np.zeros((67, 2)), np.eye(2, 3), 512)


# -- measured on the photos --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_shape_and_frame(faces, name):
    geometry, p = faces[name]
    assert p.shape == (68, 2) and p.dtype == np.float32
    np.testing.assert_array_equal(p, geometry.landmarks[list(MESH_TO_IBUG68), :2])
    # Same points whether projected before or after the crop transform.
    np.testing.assert_allclose(
        ibug68_from_mesh(geometry.landmarks_crop),
        ibug68_from_mesh(geometry.landmarks) @ geometry.crop_transform[:, :2].T
        + geometry.crop_transform[:, 2],
        atol=1e-3,
    )


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_jaw(faces, name):
    _, p = faces[name]
    jaw = p[0:17]
    d = eye_distance(p)
    # Runs image-left to image-right: x never steps back by more than 2 % of the eye
    # distance (the ends are near-vertical), and strictly increases from 2 to 14.
    assert np.all(np.diff(jaw[:, 0]) > -0.02 * d)
    assert np.all(np.diff(jaw[2:15, 0]) > 0)
    assert jaw[0, 0] < p[36, 0] and jaw[16, 0] > p[45, 0]
    # 8 is the chin: the lowest jaw point, below the lower lip.
    assert int(np.argmax(jaw[:, 1])) == 8 and jaw[8, 1] > p[57, 1]
    # Ends at about eye level (near the ears), not on the forehead or the cheek.
    assert abs(jaw[0, 1] - p[36, 1]) < 0.25 * d and abs(jaw[16, 1] - p[45, 1]) < 0.25 * d
    # 3 and 13 are below the nose base; 4 and 12 near/below the mouth corners.
    assert jaw[3, 1] > p[33, 1] and jaw[13, 1] > p[33, 1]
    assert jaw[4, 1] > p[48, 1] - 0.1 * d and jaw[12, 1] > p[54, 1] - 0.1 * d


def face_oval_path(a: int, b: int, avoid: int) -> list[int]:
    """Mesh vertices along mediapipe's face oval from a to b, not passing `avoid`."""
    from mediapipe.python.solutions import face_mesh_connections as fmc

    neighbours: dict[int, list[int]] = {}
    for u, v in fmc.FACEMESH_FACE_OVAL:
        neighbours.setdefault(u, []).append(v)
        neighbours.setdefault(v, []).append(u)
    for first in neighbours[a]:
        path, prev = [a, first], a
        while path[-1] not in (b, avoid):
            path, prev = path + [next(v for v in neighbours[path[-1]] if v != prev)], path[-1]
        if path[-1] == b:
            return path
    raise AssertionError("face oval is not a cycle")


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_jaw_splits_the_contour_evenly(faces, name):
    """1-7 (and 15-9) sit at about k/8 of the face contour from 0 (16) to the chin, as
    300W's evenly spaced jaw points do."""
    geometry, _ = faces[name]
    mesh = geometry.landmarks[:, :2].astype(np.float64)
    jaw = MESH_TO_IBUG68[0:17]
    for half, other_end in ((jaw[0:9], jaw[16]), (jaw[16:7:-1], jaw[0])):
        path = face_oval_path(half[0], half[-1], avoid=other_end)
        steps = np.linalg.norm(np.diff(mesh[path], axis=0), axis=1)
        arc = np.concatenate([[0.0], np.cumsum(steps)]) / steps.sum()
        position = dict(zip(path, arc))
        for k, vertex in enumerate(half):
            assert abs(position[vertex] - k / 8) < 0.065, (name, k, vertex, position[vertex])


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_brows_above_eyes(faces, name):
    _, p = faces[name]
    for brow, eye in ((p[17:22], p[36:42]), (p[22:27], p[42:48])):
        assert np.all(np.diff(brow[:, 0]) > 0)
        assert brow[:, 1].max() < eye[:, 1].min()
    assert p[21, 0] < p[22, 0]


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_eyes(faces, name):
    _, p = faces[name]
    assert p[36, 0] < p[39, 0] < p[42, 0] < p[45, 0]
    # Corners are the extremes of each eye; lids pair up above/below.
    for eye, outer, inner in ((range(36, 42), 36, 39), (range(42, 48), 45, 42)):
        xs = p[list(eye), 0]
        assert {int(np.argmin(xs)), int(np.argmax(xs))} == {outer - eye[0], inner - eye[0]}
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        assert p[upper, 1] < p[lower, 1]
        assert abs(p[upper, 0] - p[lower, 0]) < 0.1 * eye_distance(p)
    assert shoelace(p[36:42]) > 0 and shoelace(p[42:48]) > 0  # clockwise


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_nose(faces, name):
    _, p = faces[name]
    bridge = p[27:31]
    assert np.all(np.diff(bridge[:, 1]) > 0)
    assert p[39, 0] < p[30, 0] < p[42, 0]
    assert p[30, 1] > p[36:48, 1].max()  # tip below the eyes
    assert np.all(np.diff(p[31:36, 0]) > 0)
    assert p[33, 1] > p[30, 1] and p[33, 1] < p[51, 1]  # nose base between tip and lip


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_mouth(faces, name):
    _, p = faces[name]
    outer, inner = p[48:60], p[60:68]
    d = eye_distance(p)
    # 48 / 54 are the outer corners: the extremes of the whole mouth.
    assert p[48, 0] <= p[48:68, 0].min() + 0.02 * d
    assert p[54, 0] >= p[48:68, 0].max() - 0.02 * d
    assert np.all(np.diff(p[48:55, 0]) > 0) and np.all(np.diff(p[54:60, 0]) < 0)
    assert p[51, 1] < p[62, 1] < p[57, 1] and p[51, 1] < p[66, 1] < p[57, 1]
    assert p[62, 1] <= p[66, 1] + 0.01 * d  # a closed mouth may cross by a hair
    # Inner lip inside the outer lip's box.
    lo, hi = outer.min(0) - 0.01 * d, outer.max(0) + 0.01 * d
    assert np.all((inner >= lo) & (inner <= hi))
    # Clockwise; a closed mouth's inner lip encloses ~nothing, either way round.
    assert shoelace(outer) > 0 and shoelace(inner) > -1e-3 * d * d


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_normalised_to_crop(faces, name):
    geometry, p = faces[name]
    unit = ibug68_normalised(p, geometry.crop_transform, geometry.crop_size)
    assert unit.shape == (68, 2) and unit.dtype == np.float32
    assert np.all((unit >= 0) & (unit <= 1))
    w, h = geometry.crop_size
    np.testing.assert_allclose(unit * [w, h], ibug68_from_mesh(geometry.landmarks_crop), atol=1e-2)
    np.testing.assert_allclose(ibug68_normalised(p, geometry.crop_transform, w), unit)
    # The aligned crop puts the eyes level in its upper half, the chin lower down.
    assert abs(unit[36, 1] - unit[45, 1]) < 0.02 and unit[36, 1] < 0.5 < unit[8, 1]


def test_normalised_clip():
    pts = np.tile([[-10.0, 300.0]], (68, 1))
    unit = ibug68_normalised(pts, np.eye(2, 3), (100, 200), clip=True)
    np.testing.assert_array_equal(unit, np.tile([[0.0, 1.0]], (68, 1)))


# -- FAN guard ----------------------------------------------------------------------------

HAVE_FAN_PACKAGES = all(importlib.util.find_spec(m) for m in ("face_alignment", "torch"))


def test_fan_unavailable_names_missing_files(tmp_path):
    with pytest.raises(LandmarkerUnavailable) as err:
        FanLandmarker(weights_dir=tmp_path)
    message = str(err.value)
    assert isinstance(err.value, RuntimeError)
    for name in (FAN_WEIGHTS, S3FD_WEIGHTS):
        assert name in message and FAN_WEIGHT_URLS[name] in message
    assert str(tmp_path) in message
    if not HAVE_FAN_PACKAGES:
        assert "face_alignment" in message and "face-alignment" in message


def test_fan_unavailable_names_only_what_is_missing(tmp_path):
    (tmp_path / FAN_WEIGHTS).write_bytes(b"")
    with pytest.raises(LandmarkerUnavailable) as err:
        FanLandmarker(weights_dir=tmp_path)
    assert S3FD_WEIGHTS in str(err.value) and FAN_WEIGHTS not in str(err.value)
    if HAVE_FAN_PACKAGES:  # without a detector the network file is all it needs
        with pytest.raises(Exception) as err:  # the empty file itself is not a model
            FanLandmarker(weights_dir=tmp_path, with_detector=False)
        assert not isinstance(err.value, LandmarkerUnavailable)
    else:
        with pytest.raises(LandmarkerUnavailable) as err:
            FanLandmarker(weights_dir=tmp_path, with_detector=False)
        assert "face_alignment" in str(err.value) and "missing from" not in str(err.value)


def test_fan_default_dir_follows_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    expected = tmp_path / "th" / "hub" / "checkpoints"
    assert torch_hub_checkpoints_dir() == expected
    with pytest.raises(LandmarkerUnavailable) as err:
        FanLandmarker()
    assert str(expected) in str(err.value)
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert torch_hub_checkpoints_dir() == tmp_path / "xdg" / "torch" / "hub" / "checkpoints"


@pytest.mark.skipif(not HAVE_FAN_PACKAGES, reason="face-alignment / torch not installed")
def test_fan_file_names_match_installed_package():
    import torch
    from face_alignment import api
    from face_alignment.detection.sfd import sfd_detector

    version = torch.__version__.split("+")[0].rsplit(".", 1)[0]
    fan_url = api.models_urls.get(version, api.default_model_urls)["2DFAN-4"]
    assert fan_url == FAN_WEIGHT_URLS[FAN_WEIGHTS]
    assert sfd_detector.models_urls["s3fd"] == FAN_WEIGHT_URLS[S3FD_WEIGHTS]


@pytest.mark.skipif(not HAVE_FAN_PACKAGES, reason="face-alignment / torch not installed")
def test_fan_runs_a_local_network_and_maps_heatmaps_back(tmp_path):
    """A stand-in TorchScript network whose heatmaps peak at known cells: the points
    must come back at those cells mapped through face-alignment's crop."""
    import torch

    rng = np.random.default_rng(0)
    cells = rng.integers(4, 60, size=(68, 2))  # (x, y) in the 64x64 heatmap
    heatmaps = torch.zeros(1, 68, 64, 64)
    for k, (cx, cy) in enumerate(cells):
        heatmaps[0, k, cy, cx] = 1.0

    class Peaks(torch.nn.Module):
        def __init__(self, hm: torch.Tensor):
            super().__init__()
            self.register_buffer("hm", hm)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.hm.expand(x.shape[0], -1, -1, -1) + 0.0 * x.mean()

    torch.jit.save(torch.jit.script(Peaks(heatmaps)), str(tmp_path / FAN_WEIGHTS))
    fan = FanLandmarker(weights_dir=tmp_path, with_detector=False)
    image = PHOTOS["astronaut"]()
    box = (180.0, 60.0, 300.0, 200.0)
    points = fan.landmarks(image, box)
    assert points.shape == (68, 2) and points.dtype == np.float32
    x0, y0, x1, y1 = box
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2 - 0.12 * (y1 - y0)])
    side = 200.0 * ((x1 - x0) + (y1 - y0)) / 195.0
    expected = center + ((cells + 0.5) / 64 - 0.5) * side
    np.testing.assert_allclose(points, expected, atol=1.0)  # face-alignment rounds to int
    with pytest.raises(ValueError):
        fan.landmarks(image)  # no detector, no box


@pytest.mark.skipif(not HAVE_FAN_PACKAGES, reason="face-alignment / torch not installed")
def test_fan_loads_the_detector_from_weights_dir(tmp_path):
    """S3FD comes from the given folder, never from a download.  The stand-in detector
    sees a "face" only in its coarsest layer (128 px cells, 512 px anchors), so it
    returns one anchor box."""
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd

    state = s3fd().state_dict()
    for name, tensor in state.items():
        if "_mbox_" in name:
            tensor.zero_()
            if name.endswith("_mbox_conf.bias"):  # background wins, except in conv7_2
                tensor.fill_(10.0)
                tensor[-1] = 10.0 if not name.startswith("conv7_2") else 20.0
    torch.save(state, tmp_path / S3FD_WEIGHTS)

    class Zeros(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], 68, 64, 64)

    torch.jit.save(torch.jit.script(Zeros()), str(tmp_path / FAN_WEIGHTS))
    fan = FanLandmarker(weights_dir=tmp_path)
    image = np.ascontiguousarray(PHOTOS["astronaut"]()[::2, ::2])  # 256 x 256
    x0, y0, x1, y1 = fan.detect(image)
    assert x1 - x0 == pytest.approx(512, abs=1) and y1 - y0 == pytest.approx(512, abs=1)
    assert ((x0 + x1) / 2 - 64) % 128 == pytest.approx(0, abs=1)  # an anchor's centre
    assert ((y0 + y1) / 2 - 64) % 128 == pytest.approx(0, abs=1)
    assert fan.landmarks(image).shape == (68, 2)  # detect -> crop -> network

    for name, tensor in state.items():  # now it sees nothing
        if name.startswith("conv7_2_mbox_conf.bias"):
            tensor[-1] = 0.0
    torch.save(state, tmp_path / S3FD_WEIGHTS)
    with pytest.raises(FaceRejected) as err:
        FanLandmarker(weights_dir=tmp_path).landmarks(image)
    assert err.value.reason is RejectReason.NO_FACE
