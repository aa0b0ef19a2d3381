"""Detection over a stream of frames, with running totals: what `facemask-sdk detect` does, as a library.

A Jetson application gets the CLI's behaviour without the CLI: sources (images, folders, globs, video
files, camera indices, RTSP/HTTP URLs, with timeouts), one `Detections` per frame, and the run's
summary (faces per class, compliance over faces and over frames, mean stage timings) from the same
code the CLI prints and writes to `summary.json`.

    >>> with Detector() as detector:
    ...     stream = detector.stream(["rtsp://camera/a", "rtsp://camera/b"], max_frames=1000)
    ...     for frame, detections in stream:
    ...         ...                                   # frame.image, frame.source, frame.index
    ...     print(stream.totals.summary())

`max_frames` stops each video, camera or stream after that many frames (1000 from each camera above;
image files are all read), as `detect --max-frames` does (it used to count frames in total).
Frames that cannot be read (a broken image among many) are skipped and listed in `totals.failures`; a
video file that ends before the frame count its container reports is named in `totals.warnings`.

`stream.events()` is the same loop, told event by event (`SourceStarted`, `FrameDetected`, `FrameFailed`,
`SourceEnded`): what `facemask-sdk detect` hangs its output files, progress bars and messages on.

With `track=True` faces keep an identity across frames (`facemask_sdk.tracking`): every `Detections`
carries `tracker_id`, `stream.confirmed_now` lists the people confirmed in the frame just yielded (an
app's cue to act, say, on a person without a mask), and the summary counts people as well as faces:

    >>> stream = detector.stream("door.mp4", track=True)
    >>> for frame, detections in stream:
    ...     for person in stream.confirmed_now:
    ...         if not person.compliant: alert(person)
    >>> stream.totals.summary()["people"]  # {"people": 12, "per_class": {...}, "compliance_rate": 0.75}
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from facemask_sdk.detections import Detections, compliance_rate
from facemask_sdk.sources import DEFAULT_TIMEOUT_S, Frame, Source, VideoSource, resolve_sources
from facemask_sdk.stages import TIMINGS
from facemask_sdk.tracking import FaceTracker, Person, TrackerConfig
from facemask_sdk.validation import whole_number

if TYPE_CHECKING:
    from facemask_sdk.detector import Detector


@dataclass
class StreamTotals:
    """Running totals over the frames seen: `add` one frame's detections, `summary()` any time."""

    class_names: tuple[str, ...]
    frames: int = 0
    per_class: Counter = field(default_factory=Counter)
    frame_compliance: list[float] = field(default_factory=list)  # one entry per frame with faces
    stage_ms: Counter = field(default_factory=Counter)
    failures: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Sources read only in part (a truncated video file): their frames are counted, not failed."""
    tracker: FaceTracker | None = None
    """Set when tracking: the summary then counts people too."""

    def __post_init__(self) -> None:
        self.per_class.update({name: 0 for name in self.class_names})

    def add(self, detections: Detections, timing: dict[str, float]) -> dict:
        """Count one frame; returns its own summary (faces, per class, compliance rate)."""
        summary = detections.summary()
        self.frames += 1
        self.per_class.update(summary["per_class"])
        if summary["compliance_rate"] is not None:
            self.frame_compliance.append(float(summary["compliance_rate"]))
        for key in TIMINGS:
            self.stage_ms[key] += timing.get(key, 0.0)
        return summary

    def fail(self, source: str, reason: str) -> None:
        self.failures.append({"source": source, "reason": reason})

    def summary(self) -> dict:
        """Frames, faces, faces per frame and per class, compliance over all faces and averaged over
        frames with faces, mean milliseconds per stage, and, when tracking, `people`: unique people,
        people per class and compliance over people."""
        faces = sum(self.per_class.values())
        frames = max(self.frames, 1)
        over_frames = sum(self.frame_compliance) / len(self.frame_compliance) if self.frame_compliance else None
        return {
            "frames": self.frames,
            "faces": faces,
            "faces_per_frame": round(faces / self.frames, 3) if self.frames else None,
            "frames_with_faces": len(self.frame_compliance),
            "compliance_over_frames": None if over_frames is None else round(over_frames, 4),
            "per_class": dict(self.per_class),
            "compliance_rate": compliance_rate(self.per_class),
            "mean_ms": {key[:-3]: round(value / frames, 3) for key, value in self.stage_ms.items()},
            **({"people": self.tracker.summary()} if self.tracker is not None else {}),
        }


def frame_time_s(source: Source, frame: Frame, opened_at: float) -> float | None:
    """Seconds into a video file (frame index over its frame rate), seconds since the first frame of a
    camera or stream (their frame rates are claims), None for image files (no time between them)."""
    if not isinstance(source, VideoSource):
        return None
    if source.kind == "video":
        return frame.index / source.fps
    return time.monotonic() - opened_at


@dataclass(frozen=True)
class SourceStarted:
    """A source is about to be read; with tracking, it has just become a new scene."""

    source: Source


@dataclass(frozen=True)
class FrameDetected:
    """A frame read and detected: its detections (with `tracker_id` when tracking) and the detector's
    timing of it, already counted in `totals`."""

    source: Source
    frame: Frame
    detections: Detections
    timing: dict[str, float]
    time_s: float | None
    """Seconds into the source (`frame_time_s`); None for image files."""


@dataclass(frozen=True)
class FrameFailed:
    """A frame that could not be read (an image file among many): `frame.error` says why; it is listed in
    `totals.failures` and the source goes on."""

    source: Source
    frame: Frame


@dataclass(frozen=True)
class SourceEnded:
    """A source read to its end or to `max_frames`; `warning` when a video file ended early (also in
    `totals.warnings`). A source whose iteration is abandoned never ends."""

    source: Source
    warning: str | None = None


StreamEvent = SourceStarted | FrameDetected | FrameFailed | SourceEnded


class DetectionStream:
    """Iterate `(frame, detections)` over sources, or `events()` for the whole story; `totals` accumulates
    as frames go by. `max_frames` limits each video, camera or stream (per source, not in total). With
    `track`, each source is one scene for the tracker (people do not carry over from one video to the
    next); the images of a folder or glob are its frames in name order (extracted frames of one camera, say)."""

    def __init__(
        self,
        detector: Detector,
        sources: str | int | Source | Sequence[str | int | Source],
        max_frames: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        track: bool = False,
        tracker_config: TrackerConfig | None = None,
    ) -> None:
        self.max_frames = (
            None if max_frames is None else whole_number("max_frames", max_frames)
        )  # before any source opens
        items = list(sources) if isinstance(sources, (list, tuple)) else [sources]
        self.sources: list[Source] = []
        for item in items:
            if isinstance(item, (str, int)):
                self.sources += resolve_sources([str(item)], timeout_s=timeout_s)
            else:
                self.sources.append(item)
        self.detector = detector
        self.tracker = FaceTracker(detector.spec.classes, tracker_config) if track else None
        self.totals = StreamTotals(detector.spec.classes, tracker=self.tracker)
        self.confirmed_now: list[Person] = []
        """People confirmed in the frame last yielded (tracking only)."""

    def __iter__(self) -> Iterator[tuple[Frame, Detections]]:
        with contextlib.closing(self.events()) as events:
            for event in events:
                if isinstance(event, FrameDetected):
                    yield event.frame, event.detections

    def events(self) -> Iterator[StreamEvent]:
        """The one frame loop, SDK's and CLI's: every source's start and end and each of its frames,
        detected or failed; `totals` and the tracker are up to date when an event arrives. The sources
        are closed at the end, or when the iteration is abandoned (closed or garbage-collected)."""
        try:
            for source in self.sources:
                yield from self._source_events(source)
        finally:
            self.close()

    def _source_events(self, source: Source) -> Iterator[StreamEvent]:
        if self.tracker is not None:
            self.tracker.new_scene()
        yield SourceStarted(source)
        opened_at: float | None = None
        position = 0  # frames of this source detected so far (an image file's own index is 0)
        for frame in self._read(source):
            if frame.image is None:
                self.totals.fail(frame.source, frame.error or "unreadable")
                yield FrameFailed(source, frame)
                continue
            detections = self.detector(frame.image)
            timing = self.detector.last_timing
            self.totals.add(detections, timing)
            opened_at = time.monotonic() if opened_at is None else opened_at
            time_s = frame_time_s(source, frame, opened_at)
            if self.tracker is not None:
                detections = self.tracker.update(detections, position, time_s)
                self.confirmed_now = self.tracker.confirmed_now
            position += 1
            yield FrameDetected(source, frame, detections, timing, time_s)
        yield SourceEnded(source, self._shortfall(source))

    def _read(self, source: Source) -> Iterator[Frame]:
        """The frames of `source`, the first `max_frames` of a video, camera or stream (no frame past them
        is read: a live stream would wait for it)."""
        limit = self.max_frames if isinstance(source, VideoSource) else None
        return itertools.islice(source, limit)

    def _shortfall(self, source: Source) -> str | None:
        """The warning for a video file that gave fewer frames than its container reports, when
        `max_frames` did not stop it first (a truncated or corrupt file), recorded in `totals.warnings`."""
        if not isinstance(source, VideoSource) or not source.frame_count or source.frames_read >= source.frame_count:
            return None
        if self.max_frames is not None and source.frames_read >= self.max_frames:
            return None
        message = (
            f"{source.target}: read {source.frames_read} of the {source.frame_count} frames its container "
            "reports (truncated or corrupt video?)"
        )
        self.totals.warnings.append(message)
        return message

    def close(self) -> None:
        """Release cameras, streams and video files (iterating to the end does it too)."""
        for source in self.sources:
            source.close()
