"""The Beam stages of FaceInstruct, over the shared stage shell (`pipelines.common.stages`):
crop faces (images, videos, frames of a video) -> describe -> rate -> make the sample."""

from __future__ import annotations

import hashlib
import threading

from apache_beam.metrics import Metrics

from pipelines.common.beam_tags import OK, REJECTED, event
from pipelines.common.stages import NAMESPACE, LlmStage, StageFn, llm_errors_as_rejections
from pipelines.faceinstruct.media import FaceMedia
from schemas.common import PairRejected, RejectReason, Stage

_per_thread = threading.local()


def shared_cropper(config):
    """One `FaceCropper` per thread and config (runners may set a DoFn up many times;
    the face models take a second to load)."""
    from pipelines.faceinstruct.media import FaceCropper

    cache = _per_thread.__dict__.setdefault("croppers", {})
    if config not in cache:
        cache[config] = FaceCropper(config)
    return cache[config]


class CropStage(StageFn):
    """Decode the media and find the face in one pass: a refusal counts in the stage of its
    reason (`decode_error` in read, `no_face` in face).  With a media cache, finished crops
    and refusals are kept by content, and a re-run takes them from there."""

    stage = Stage.FACE

    def __init__(self, config, cache_root: str | None = None) -> None:
        super().__init__()
        self.config, self.cache_root = config, cache_root
        self.cropper = self.cache = None
        self.hits = Metrics.counter(NAMESPACE, "media_cache_hits")

    def setup(self) -> None:
        self.cropper = shared_cropper(self.config)
        if self.cache_root:
            from pipelines.faceinstruct.media import MediaCache

            self.cache = MediaCache(self.cache_root, self.config)

    def cached(self, key: str | None, item, make):
        """(`make()`'s result through the cache: a FaceMedia, or the PairRejected it
        raised; the hit or miss event, None without a cache)."""
        if self.cache is None or key is None:
            return make(), None
        found = self.cache.get(key, item)
        if found is not None:
            self.hits.inc()
            return found, event(("analysis_cache", "hits"))
        try:
            result = make()
        except PairRejected as exc:
            result = exc
        self.cache.put(key, result)
        return result, event(("analysis_cache", "misses"))

    def stage_of(self, reason: RejectReason) -> str:
        return (reason.stage or self.stage).value

    def pair_of(self, element):
        return element


class CropFaces(CropStage):
    """An image or a video item -> its `FaceMedia`."""

    def step(self, item):
        if item.media_type == "video":
            def make():
                return self.cropper.video(item)
            content = self.cache.content_digest(item.media) if self.cache is not None else None
        else:  # an image's bytes are read once: for its cache key and for decoding
            data = _read(item.media)

            def make():
                return self.cropper.image(item, data)
            content = hashlib.sha256(data).hexdigest() if self.cache is not None and data is not None else None
        key = self.cache.key(content) if content else None
        result, counted = self.cached(key, item, make)
        out = [counted] if counted else []
        if isinstance(result, PairRejected):  # a refusal, its cache count kept beside it
            row = item.rejected(self.stage_of(result.reason), result.reason.value, result.detail)
            return [*out, (REJECTED, row)]
        return [*out, (OK, result)]


def _read(path: str) -> bytes | None:
    """A file's bytes; None when it cannot be read (`read_image` then says why)."""
    from pipelines.vision.images import read_bytes

    try:
        return read_bytes(path)
    except OSError:
        return None


class CropVideoFrames(CropStage):
    """(video, its labelled frame items) -> a `FaceMedia` per frame, or its rejected row;
    the video is decoded once for all of them."""

    def pair_of(self, element):
        return element[1][0]

    def step(self, element):
        _, items = element
        items = sorted(items, key=lambda i: (i.source_frame, i.manifest, i.row))
        content = self.cache.content_digest(items[0].media) if self.cache is not None else None
        todo, done = [], []
        for item in items:  # the frames a cache holds are not decoded again
            found = self.cache.get(self.cache.key(content, item.source_frame), item) if content else None
            (done if found is not None else todo).append((item, found))
        if done:
            yield event(("analysis_cache", "hits"), len(done))
        results = [found if isinstance(found, FaceMedia) else (item, found) for item, found in done]
        if todo:
            if content:
                yield event(("analysis_cache", "misses"), len(todo))
            for result in self.cropper.video_frames([item for item, _ in todo]):
                if content:
                    item, value = result if isinstance(result, tuple) else (result.item, result)
                    self.cache.put(self.cache.key(content, item.source_frame), value)
                results.append(result)
        for result in results:
            if isinstance(result, tuple):
                item, exc = result
                yield REJECTED, item.rejected(self.stage_of(exc.reason), exc.reason.value, exc.detail)
            else:
                yield OK, result


class Describe(LlmStage):
    """The label-assisted description of each face."""

    stage = Stage.DESCRIBE
    keep_batches = True  # the rate stage takes them as they are

    def __init__(self, describer: str, llm=None) -> None:
        super().__init__(llm)
        self.describer_name = describer
        self.describer = None

    def setup(self) -> None:
        from pipelines.faceinstruct.describe import LlmDescriber, OfflineDescriber

        super().setup()
        self.describer = LlmDescriber(self.client) if self.client is not None else OfflineDescriber()

    def pair_of(self, element):
        return element.item

    @llm_errors_as_rejections
    def step(self, media):
        return media, self.describer.describe(media)


class Rate(LlmStage):
    """The label-leak check, then the four criteria; items below `min_rating` are rejected."""

    stage = Stage.RATE

    def __init__(self, rater: str | None, llm=None, min_rating: float = 6) -> None:
        super().__init__(llm)
        self.rater_name, self.min_rating = rater, min_rating
        self.rater = None

    def setup(self) -> None:
        from pipelines.faceinstruct.describe import LlmRater, OfflineRater

        super().setup()
        if self.client is not None:
            self.rater = LlmRater(self.client)
        elif self.rater_name is not None:
            self.rater = OfflineRater()

    def pair_of(self, element):
        return element[0].item

    @llm_errors_as_rejections
    def step(self, element) -> list:
        from pipelines.common.rating import below_bar, rating_events
        from pipelines.faceinstruct.describe import label_leak

        media, description = element
        leak = label_leak(description)
        if leak is not None:
            raise PairRejected(RejectReason.LABEL_LEAK, f"the description gives away that its writer was told the "
                               f"label ({leak!r})", description=description)
        rating, out = None, []
        if self.rater is not None:
            rating = self.rater.rate(media, description)
            out += rating_events(rating)
            low = below_bar(rating, self.min_rating)
            if low is not None:
                row = media.item.rejected(self.stage.value, RejectReason.LOW_RATING.value, low, rating=rating,
                                          description=description)
                return [*out, (REJECTED, row)]
        return [*out, (OK, (media, description, rating))]


class MakeSample(StageFn):
    """The shard row of each item."""

    stage = Stage.SAMPLES

    def __init__(self, sample_config, options_hash: str, describer, rater) -> None:
        super().__init__()
        self.sample_config, self.options_hash = sample_config, options_hash
        self.describer, self.rater = describer, rater
        self.maker = None

    def setup(self) -> None:
        from pipelines.faceinstruct.samples import SampleMaker

        self.maker = SampleMaker(self.sample_config, self.options_hash, self.describer, self.rater)

    def pair_of(self, element):
        return element[0].item

    def step(self, element):
        from schemas.features import to_row

        media, description, rating = element
        row = self.maker.make(media, description, rating)
        yield event(("items_written",))
        yield event(("images", row.split))
        yield event(("samples", row.task, row.split))
        yield event(("source", row.source_dataset, "written"))
        if row.media_type == "video":
            yield event(("video_frames", "failed"), media.failed_frames)
            yield event(("video_frames", "track"), row.track_frames)
            yield event(("video_jitter", "detector"), media.detector_jitter or 0.0)
            yield event(("video_jitter", "track"), media.track_jitter or 0.0)
            yield event(("video_jitter", "videos"))
        for template in row.provenance.prompt_templates:
            yield event(("template", template.id, template.version))
        yield OK, to_row(row)
