"""Stages 1, 3, 4, 5 on real photos with controlled edits: mask, gates, coverage, evidence."""

import cv2
import numpy as np
import pytest

from fict.coverage import ConceptConfig, concept_coverage
from pipelines.fifa.analysis import AnalysisConfig, PairAnalyzer
from pipelines.fifa.artifacts import MaskConfig
from pipelines.vision.images import ImageRejected, decode_image, to_rgb8
from schemas.common import RejectReason


def _region(result, tree, concept, shape):
    """A concept's region in original pixels, from the photo's own label map."""
    ids = [tree.atomic_index[a] for a in tree.atomic_descendants(concept)]
    crop_region = np.isin(result.labels, ids).astype(np.uint8)
    return result.geometry.unwarp(crop_region, (shape[1], shape[0])).astype(bool)


def _edit(image, region, fn):
    alpha = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 1.0)[..., None]
    edited = fn(image.astype(np.float32))
    return np.clip(image * (1 - alpha) + edited * alpha, 0, 255).astype(np.uint8)


def _iou(a, b):
    return np.count_nonzero(a & b) / max(np.count_nonzero(a | b), 1)


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_identical_pair_gives_empty_mask(photo_results, name):
    result = photo_results[name]
    assert result.ok
    assert not result.artifact_mask.any()
    assert not any(c.artifact for c in result.analysis.concepts)


def test_encoding_noise_is_below_the_floor(analyzer, photos):
    image = photos["grace_hopper"]
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 2.0, image.shape), 0, 255).astype(np.uint8)
    result = analyzer.analyze(image, noisy)
    assert result.ok
    assert result.artifact_mask.mean() < 0.001


def test_jpeg_reencoding_is_below_the_floor(analyzer, photos):
    image = photos["astronaut"]
    ok, buf = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    reencoded = decode_image(buf.tobytes())
    result = analyzer.analyze(image, reencoded)
    assert result.ok
    assert result.artifact_mask.mean() < 0.002


@pytest.mark.parametrize("concept, mirror", [("left_eyebrow", "right_eyebrow"),
                                             ("right_cheek_apple", "left_cheek_apple")])
def test_local_edit_found_on_its_concept_and_side(analyzer, photos, photo_results, tree, concept, mirror):
    image = photos["grace_hopper"]
    region = _region(photo_results["grace_hopper"], tree, concept, image.shape)
    fake = _edit(image, region, lambda x: x * 0.55)
    result = analyzer.analyze(image, fake)
    assert result.ok
    truth = result.geometry.warp(region.astype(np.uint8), cv2.INTER_NEAREST).astype(bool)
    assert _iou(result.artifact_mask, truth) >= 0.7
    flagged = {c.id for c in result.analysis.concepts if c.artifact}
    assert concept in flagged and mirror not in flagged
    assert not flagged & {"chin", "lips", "hair", "background", "neck"}
    record = next(c for c in result.analysis.concepts if c.id == concept)
    assert record.coverage > 0.6 and record.share > 0.6
    assert record.evidence.delta_l < -10  # darkened


def test_percentile_mode_marks_the_top_five_percent(photos, photo_results, tree):
    image = photos["astronaut"]
    # A large edit (hair and forehead) so the top 5 % lie inside it.
    region = _region(photo_results["astronaut"], tree, "hair", image.shape) | \
        _region(photo_results["astronaut"], tree, "forehead", image.shape)
    fake = _edit(image, region, lambda x: x[..., ::-1] * 0.8)
    config = AnalysisConfig(mask=MaskConfig(mode="percentile", percentile=95, close_px=0, open_px=0,
                                            min_component_px=0, smooth_sigma=0))
    with PairAnalyzer(config) as analyzer:
        result = analyzer.analyze(image, fake)
    assert result.ok
    assert 0.045 <= result.artifact_mask.mean() <= 0.055
    with PairAnalyzer(config) as analyzer:
        same = analyzer.analyze(image, image.copy())
    assert not same.artifact_mask.any()  # the noise floor still holds


def test_blur_and_sharpen_evidence(analyzer, photos, photo_results, tree):
    image = photos["grace_hopper"]
    region = _region(photo_results["grace_hopper"], tree, "nose", image.shape)
    blurred = _edit(image, region, lambda x: cv2.GaussianBlur(x, (0, 0), 4))
    sharp = _edit(image, region, lambda x: x + 2.5 * (x - cv2.GaussianBlur(x, (0, 0), 2)))
    ev_blur = next(c for c in analyzer.analyze(image, blurred).analysis.concepts if c.id == "nose").evidence
    ev_sharp = next(c for c in analyzer.analyze(image, sharp).analysis.concepts if c.id == "nose").evidence
    assert ev_blur.sharpness_ratio < 0.5 and ev_blur.edge_ratio < 1
    assert ev_sharp.sharpness_ratio > 2 and ev_sharp.edge_ratio > 1


def test_whole_face_change_is_rejected(analyzer, photos, photo_results, tree):
    image = photos["grace_hopper"]
    region = _region(photo_results["grace_hopper"], tree, "face", image.shape)
    fake = _edit(image, region, lambda x: 255 - x)
    result = analyzer.analyze(image, fake)
    assert result.analysis.status == "rejected"
    assert result.analysis.reason in (RejectReason.GLOBAL_CHANGE, RejectReason.NOT_LOCALIZED)
    assert result.analysis.stage.value == "artifact"


def _grade(image, hue=0.0, saturation=1.0, value=1.0):
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + hue) % 256
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * value, 0, 255)
    return cv2.cvtColor(hsv.round().astype(np.uint8), cv2.COLOR_HSV2RGB_FULL)


def _resampled(image, factor):
    h, w = image.shape[:2]
    small = cv2.resize(image, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize("change", [
    pytest.param(lambda x: _grade(x, hue=6, saturation=1.15, value=1.08), id="colour grade"),
    pytest.param(lambda x: _grade(x, value=0.94), id="weak darkening"),
    pytest.param(lambda x: np.clip((x.astype(np.float32) - 128) * 1.1 + 128, 0, 255).astype(np.uint8),
                 id="contrast"),
    pytest.param(lambda x: _resampled(x, 0.5), id="whole-image resample"),
])
@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_global_change_is_never_ok(analyzer, photos, name, change):
    """A manipulated image must not come back clean: a change of the whole image is
    rejected as `global_change`, saying how much of the face changed."""
    image = photos[name]
    result = analyzer.analyze(image, change(image))
    assert result.analysis.reason == RejectReason.GLOBAL_CHANGE, result.analysis
    assert result.analysis.stage.value == "artifact"
    assert "whole image changed" in result.analysis.detail and "% of the face" in result.analysis.detail


def test_the_global_gate_holds_in_every_mask_mode(photos):
    image = photos["grace_hopper"]
    graded = _grade(image, hue=6, saturation=1.15, value=1.08)
    for mode in ("absolute", "percentile"):
        with PairAnalyzer(AnalysisConfig(mask=MaskConfig(mode=mode, threshold=12.0))) as analyzer:
            assert analyzer.analyze(image, graded).analysis.reason == RejectReason.GLOBAL_CHANGE, mode


def test_local_edit_after_a_whole_image_resample_is_rejected(analyzer, photos, photo_results, tree):
    image = photos["astronaut"]
    region = _region(photo_results["astronaut"], tree, "lips", image.shape)
    edited = _edit(image, region, lambda x: x * np.float32([1.0, 0.7, 0.7]))
    assert analyzer.analyze(image, edited).ok
    assert analyzer.analyze(image, _resampled(edited, 0.6)).analysis.reason == RejectReason.GLOBAL_CHANGE


@pytest.mark.parametrize("quality", [80, 95])
def test_recompressing_both_images_flags_nothing(analyzer, photos, quality):
    image = photos["grace_hopper"]

    def jpeg(x, q):
        return decode_image(cv2.imencode(".jpg", x[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes())

    result = analyzer.analyze(jpeg(image, 90), jpeg(image, quality))
    assert result.ok
    assert result.artifact_mask.mean() < 0.002


def test_shifted_fake_is_misaligned(analyzer, photos):
    image = photos["astronaut"]
    shifted = cv2.warpAffine(image, np.float32([[1, 0, 5], [0, 1, 3]]), image.shape[1::-1],
                             borderMode=cv2.BORDER_REFLECT101)
    result = analyzer.analyze(image, shifted)
    assert result.analysis.reason == RejectReason.MISALIGNED


def test_size_mismatch(analyzer, photos):
    image = photos["astronaut"]
    result = analyzer.analyze(image, cv2.resize(image, (500, 500)))
    assert result.analysis.reason == RejectReason.SIZE_MISMATCH
    assert result.analysis.stage.value == "read"


def test_no_face(analyzer):
    from skimage import data

    coffee = data.coffee()
    assert analyzer.analyze(coffee, coffee.copy()).analysis.reason == RejectReason.NO_FACE


def test_face_too_small(analyzer, photos):
    canvas = np.full((640, 640, 3), 128, np.uint8)
    canvas[200:328, 200:328] = cv2.resize(photos["grace_hopper"], (128, 128), interpolation=cv2.INTER_AREA)
    result = analyzer.analyze(canvas, canvas.copy())
    assert result.analysis.reason in (RejectReason.FACE_TOO_SMALL, RejectReason.NO_FACE)


def test_channels_are_normalised():
    rgb = np.random.default_rng(1).integers(0, 255, (8, 9, 3), np.uint8)
    grey = rgb[..., 0]
    assert to_rgb8(grey).shape == (8, 9, 3) and np.array_equal(to_rgb8(grey)[..., 2], grey)
    rgba = np.dstack([rgb, np.full((8, 9), 7, np.uint8)])
    assert np.array_equal(to_rgb8(rgba), rgb)
    wide = rgb.astype(np.uint16) * 257
    assert np.array_equal(to_rgb8(wide), rgb)
    for encoded in (cv2.imencode(".png", grey)[1], cv2.imencode(".png", wide[..., ::-1])[1],
                    cv2.imencode(".png", rgba[..., [2, 1, 0, 3]])[1]):
        decoded = decode_image(encoded.tobytes())
        assert decoded.shape == (8, 9, 3) and decoded.dtype == np.uint8
    with pytest.raises(ImageRejected) as err:
        to_rgb8(np.zeros((4, 4, 5), np.uint8))
    assert err.value.reason == RejectReason.UNSUPPORTED_CHANNELS


def test_corrupt_and_missing_files(analyzer, tmp_path, photos):
    good = tmp_path / "real.png"
    cv2.imwrite(str(good), photos["astronaut"][:, :, ::-1])
    corrupt = tmp_path / "fake.png"
    corrupt.write_bytes(good.read_bytes()[:400])
    assert analyzer.analyze_files(good, corrupt).analysis.reason == RejectReason.DECODE_ERROR
    assert analyzer.analyze_files(good, tmp_path / "nope.png").analysis.reason == RejectReason.MISSING_FILE


def test_coverage_and_share_by_hand(tree):
    n = len(tree.atomic)
    a, b = tree.atomic_index["left_iris"], tree.atomic_index["left_inner_sclera"]
    labels = np.full((10, 10), tree.atomic_index["top_background"], np.uint8)
    labels[:, :5] = a  # 50 px of left iris
    labels[:2, 5:] = b  # 10 px of left inner sclera
    mask = np.zeros((10, 10), bool)
    mask[:, :2] = True  # 20 px, all in the iris
    cov = concept_coverage(tree, labels, mask, ConceptConfig(min_pixels=5))
    i = tree.node_index
    assert cov.region_px[i["left_iris"]] == 50 and cov.artifact_px[i["left_iris"]] == 20
    assert cov.coverage[i["left_iris"]] == pytest.approx(0.4)
    assert cov.share[i["left_iris"]] == pytest.approx(1.0)
    assert cov.coverage[i["left_eyeball"]] == pytest.approx(20 / 60)
    assert cov.region_px[i["facial_image"]] == 100
    assert cov.artifact[i["left_iris"]] and cov.artifact[i["left_eye"]] and cov.artifact[i["facial_image"]]
    assert not cov.artifact[i["left_inner_sclera"]] and not cov.artifact[i["right_eye"]]
    assert n == 112


def test_two_faces_are_rejected(analyzer, photos):
    a = cv2.resize(photos["astronaut"][0:300, 100:400], (300, 300))
    b = cv2.resize(photos["grace_hopper"][60:460, 56:456], (300, 300))
    canvas = np.concatenate([a, b], axis=1)
    result = analyzer.analyze(canvas, canvas.copy())
    assert result.analysis.reason == RejectReason.MULTIPLE_FACES
    assert result.analysis.stage.value == "face"


@pytest.mark.parametrize("shift, inside", [(-50.0, True), (30.0, False)])
def test_valid_crop_mask(shift, inside):
    from pipelines.vision.faces import Detection, FaceGeometry

    transform = np.array([[0.5, 0.0, shift], [0.0, 0.5, shift]])
    geometry = FaceGeometry(Detection((0, 0, 1, 1), 1.0), np.zeros((478, 3), np.float32),
                            transform, (256, 256))
    valid = geometry.valid_crop_mask((800, 700))
    by_warp = geometry.warp(np.full((700, 800), 255, np.uint8), cv2.INTER_NEAREST) > 0
    assert valid.all() == inside
    assert np.array_equal(valid, by_warp)
