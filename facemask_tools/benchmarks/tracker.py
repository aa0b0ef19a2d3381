"""The tracker measured: people counted and identity switches on the test clips, cost per frame with 50
faces, memory over a 10,000-frame soak; beside Roboflow's ByteTrack (`trackers`) when it is installed.

    facemask-sdk dev tracker --out runs/tracker.json

The clips' detections come from the shipped model once; both trackers then read the same boxes, so
the comparison is of the trackers alone. The soak feeds synthetic detections (50 faces drifting, now
and then a false box) so that its cost is the tracker's, not the detector's.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from facemask_sdk.detections import Detections
from facemask_sdk.spec import CLASSES
from facemask_sdk.tracking import FaceTracker
from facemask_tools.benchmarks.machine import machine_info
from facemask_tools.benchmarks.tracking_clips import CLIPS, identity_switches


class ReferenceByteTrack:
    """Roboflow's `trackers.ByteTrackTracker` behind the same `update` and counting as `FaceTracker`:
    its defaults, one id per track, the class of a person by the same score-weighted vote."""

    def __init__(self) -> None:
        import supervision
        from trackers import ByteTrackTracker

        self._supervision = supervision
        self.tracker = ByteTrackTracker()
        self.votes: dict[int, np.ndarray] = {}

    def update(self, detections: Detections, frame_index: int | None = None, time_s: float | None = None) -> Detections:
        result = self.tracker.update(
            self._supervision.Detections(
                xyxy=detections.xyxy.astype(np.float32), confidence=detections.scores, class_id=detections.class_ids
            )
        )
        ids = np.full(len(detections), -1, np.int64)
        for box, tracker_id, class_id, score in zip(result.xyxy, result.tracker_id, result.class_id, result.confidence):
            if tracker_id is None or tracker_id < 0:
                continue
            match = int(np.argmin(np.abs(detections.xyxy - box).sum(axis=1)))
            ids[match] = int(tracker_id) + 1  # ours count from 1
            self.votes.setdefault(int(tracker_id) + 1, np.zeros(len(CLASSES)))[int(class_id)] += float(score)
        return Detections(detections.xyxy, detections.scores, detections.class_ids, detections.class_names, ids)

    def summary(self) -> dict:
        per_class = {name: 0 for name in CLASSES}
        for votes in self.votes.values():
            per_class[CLASSES[int(np.argmax(votes))]] += 1
        return {"people": len(self.votes), "per_class": per_class}


def on_clips(trackers: dict[str, type]) -> list[dict]:
    """People per class and ID switches of each tracker on each clip (shipped model's detections)."""
    from facemask_sdk.detector import Detector

    rows = []
    with Detector() as detector:
        for name, make in tqdm(CLIPS.items(), desc="clips", unit="clip"):
            clip = make()
            per_frame = [detector(frame) for frame in clip.frames]
            for tracker_name, factory in trackers.items():
                tracker = factory()
                started = time.perf_counter()
                tracked = [tracker.update(d, i, i / clip.fps) for i, d in enumerate(per_frame)]
                ms = 1e3 * (time.perf_counter() - started) / len(per_frame)
                switches, _ = identity_switches(clip, tracked)
                counted = tracker.summary()["per_class"]
                rows.append(
                    {
                        "clip": name,
                        "tracker": tracker_name,
                        "frames": len(per_frame),
                        "true_people": clip.people_per_class(),
                        "counted": counted,
                        "exact": counted == clip.people_per_class(),
                        "id_switches": switches,
                        "ms_per_frame": round(ms, 3),
                    }
                )
    return rows


def synthetic_crowd(faces: int, frames: int, seed: int = 0):
    """Detections of `faces` faces drifting in a 1920x1080 frame, each frame, with a one-frame false box
    every 50 frames (the soak's input: the tracker's work without the detector's)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform([100, 100], [1820, 980], (faces, 2))
    velocity = rng.normal(0, 2, (faces, 2))
    classes = rng.integers(0, len(CLASSES), faces)
    for t in range(frames):
        centres = np.clip(centres + velocity, 40, [1880, 1040])
        boxes = np.concatenate([centres - 20, centres + 20], axis=1)
        scores = rng.uniform(0.45, 0.95, faces)
        class_ids = classes.copy()
        if t % 50 == 0:
            boxes = np.vstack([boxes, rng.uniform(0, 1000, 2).repeat(2) + [0, 0, 30, 30]])
            scores, class_ids = np.append(scores, 0.7), np.append(class_ids, 1)
        yield Detections(boxes, scores, class_ids)


def soak(faces: int, frames: int) -> dict:
    """Milliseconds per update (p50, p99) over the whole soak, then, in a second pass under tracemalloc
    (which slows every allocation), the memory the tracker holds after 10% of the frames and at the end."""
    crowd = synthetic_crowd(faces, frames)
    tracker, times = FaceTracker(CLASSES), np.empty(frames)
    for t, detections in enumerate(tqdm(crowd, total=frames, desc="soak, time", unit="frame")):
        started = time.perf_counter()
        tracker.update(detections)
        times[t] = time.perf_counter() - started
    memory = {}
    tracker = FaceTracker(CLASSES)
    tracemalloc.start()
    for t, detections in enumerate(
        tqdm(synthetic_crowd(faces, frames), total=frames, desc="soak, memory", unit="frame")
    ):
        tracker.update(detections)
        del detections
        if t + 1 in (frames // 10, frames):
            memory[t + 1] = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    first, last = (memory[k] for k in sorted(memory))
    ms = 1e3 * times
    return {
        "faces": faces,
        "frames": frames,
        "ms_p50": round(float(np.percentile(ms, 50)), 4),
        "ms_p99": round(float(np.percentile(ms, 99)), 4),
        "live_tracks_at_end": tracker.live_tracks,
        "people": len(tracker.people),
        "traced_kib_at_10pct": round(first / 1024, 1),
        "traced_kib_at_end": round(last / 1024, 1),
    }


@click.command("tracker")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("runs/tracker.json"), show_default=True
)
@click.option("--soak-frames", type=click.IntRange(min=10), default=10_000, show_default=True)
def main(out: Path, soak_frames: int) -> None:
    """People counting and cost of the face tracker: the clips through the shipped model, then a soak of 50
    synthetic faces; writes the JSON report to --out."""
    trackers: dict[str, type] = {"facemask_sdk.FaceTracker": lambda: FaceTracker(CLASSES)}
    try:
        import trackers as roboflow_trackers  # noqa: F401

        trackers["trackers.ByteTrackTracker"] = ReferenceByteTrack
    except ImportError:
        click.echo("trackers (Roboflow) not installed: FaceTracker alone (pip install trackers for the comparison)")
    report = {"machine": machine_info(), "clips": on_clips(trackers), "soak": soak(50, soak_frames)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for row in report["clips"]:
        click.echo(
            f"{row['clip']:9s} {row['tracker']:26s} exact={row['exact']!s:5s} switches={row['id_switches']} "
            f"counted={row['counted']} true={row['true_people']} {row['ms_per_frame']} ms"
        )
    click.echo(f"soak, 50 faces: {report['soak']}")
    click.echo(f"written {out}")
