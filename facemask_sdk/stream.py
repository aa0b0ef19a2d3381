"""Detection over a stream of frames, with running totals: what `facemask-sdk detect` does, as a library.

A Jetson application gets the CLI's behaviour without the CLI: sources (images, folders, globs, video
files, camera indices, RTSP/HTTP URLs, with timeouts), one `Detections` per frame, and the run's
summary (faces per class, compliance over faces and over frames, mean stage timings) from the same
code the CLI prints and writes to `summary.json`.

    >>> with Detector() as detector:
    ...     stream = detector.stream("rtsp://camera/live", max_frames=1000)
    ...     for frame, detections in stream:
    ...         ...                                   # frame.image, frame.source, frame.index
    ...     print(stream.totals.summary())

Frames that cannot be read (a broken image among many) are skipped and listed in `totals.failures`.

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

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from facemask_sdk.detections import Detections, compliance_rate
from facemask_sdk.sources import DEFAULT_TIMEOUT_S, Frame, Source, VideoSource, resolve_sources
from facemask_sdk.stages import TIMINGS
from facemask_sdk.tracking import FaceTracker, Person, TrackerConfig

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


class DetectionStream:
    """Iterate `(frame, detections)` over sources; `totals` accumulates as frames go by. With `track`,
    each source is one scene for the tracker (people do not carry over from one video to the next); the
    images of a folder or glob are its frames in name order (extracted frames of one camera, say)."""

    def __init__(
        self,
        detector: Detector,
        sources: str | int | Source | Sequence[str | int | Source],
        max_frames: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        track: bool = False,
        tracker_config: TrackerConfig | None = None,
    ) -> None:
        items = list(sources) if isinstance(sources, (list, tuple)) else [sources]
        self.sources: list[Source] = []
        for item in items:
            if isinstance(item, (str, int)):
                self.sources += resolve_sources([str(item)], timeout_s=timeout_s)
            else:
                self.sources.append(item)
        self.detector = detector
        self.max_frames = max_frames
        self.tracker = FaceTracker(detector.spec.classes, tracker_config) if track else None
        self.totals = StreamTotals(detector.spec.classes, tracker=self.tracker)
        self.confirmed_now: list[Person] = []
        """People confirmed in the frame last yielded (tracking only)."""

    def frames(self) -> Iterator[tuple[Source, Frame]]:
        """Every readable frame of every source, in order, up to `max_frames` in all; unreadable ones
        are recorded in `totals.failures` and skipped."""
        seen = 0
        for source in self.sources:
            if self.tracker is not None:
                self.tracker.new_scene()
            for frame in source:
                if self.max_frames is not None and seen >= self.max_frames:
                    return
                if frame.image is None:
                    self.totals.fail(frame.source, frame.error or "unreadable")
                    continue
                seen += 1
                yield source, frame

    def __iter__(self) -> Iterator[tuple[Frame, Detections]]:
        try:
            opened_at: dict[int, float] = {}
            position: Counter = Counter()  # frames of each source so far (an image file's own index is 0)
            for source, frame in self.frames():
                detections = self.detector(frame.image)
                self.totals.add(detections, self.detector.last_timing)
                if self.tracker is not None:
                    start = opened_at.setdefault(id(source), time.monotonic())
                    time_s = frame_time_s(source, frame, start)
                    detections = self.tracker.update(detections, position[id(source)], time_s)
                    position[id(source)] += 1
                    self.confirmed_now = self.tracker.confirmed_now
                yield frame, detections
        finally:
            self.close()

    def close(self) -> None:
        """Release cameras, streams and video files (iterating to the end does it too)."""
        for source in self.sources:
            source.close()
