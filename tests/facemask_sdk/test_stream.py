"""facemask_sdk.stream: `Detector.stream` gives the CLI's detections and summary to a library user."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemask_sdk.detections import Detections
from facemask_sdk.errors import FacemaskError
from facemask_sdk.stream import FrameDetected, FrameFailed, SourceEnded, SourceStarted, StreamTotals

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "images"


def _video(path: Path, frames: int) -> Path:
    """A small MJPG video of a sample photo sliding sideways."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    base = cv2.resize(cv2.imread(str(sorted(SAMPLES.glob("*.png"))[0])), (160, 120))
    for i in range(frames):
        writer.write(np.roll(base, 4 * i, axis=1))
    writer.release()
    return path


def test_totals_count_faces_compliance_and_failures() -> None:
    totals = StreamTotals(("with_mask", "without_mask", "mask_weared_incorrect"))
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32)
    first = totals.add(Detections(boxes, np.full(3, 0.9), np.array([0, 0, 1])), {"total_ms": 10.0})
    totals.add(Detections.empty(), {"total_ms": 20.0})
    totals.fail("broken.png", "not an image")
    summary = totals.summary()
    assert first["compliance_rate"] == pytest.approx(2 / 3)
    assert summary["frames"] == 2 and summary["faces"] == 3 and summary["frames_with_faces"] == 1
    assert summary["per_class"] == {"with_mask": 2, "without_mask": 1, "mask_weared_incorrect": 0}
    assert summary["compliance_rate"] == pytest.approx(2 / 3) and summary["mean_ms"]["total"] == 15.0
    assert totals.failures == [{"source": "broken.png", "reason": "not an image"}]


def test_detector_stream_matches_detect_and_skips_unreadable_files(tmp_path: Path, run_cli) -> None:
    pytest.importorskip("onnxruntime")
    from facemask_sdk import Detector

    folder = tmp_path / "images"
    shutil.copytree(ROOT / "samples" / "images", folder)
    (folder / "broken.png").write_bytes(b"not an image")
    with Detector() as detector:
        stream = detector.stream(str(folder))
        seen = [(frame.source, len(detections)) for frame, detections in stream]
        expected = [len(detector(path)) for path in sorted((ROOT / "samples" / "images").glob("*.png"))]
    assert [count for _, count in seen] == expected and len(seen) == 4
    assert [f["source"] for f in stream.totals.failures] == [str(folder / "broken.png")]
    result = run_cli(["detect", str(folder), "--out", str(tmp_path / "out")])
    assert result.returncode == 1  # one input failed
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    mine = stream.totals.summary()
    for key in ("frames", "faces", "per_class", "compliance_rate", "compliance_over_frames", "frames_with_faces"):
        assert written[key] == mine[key], key


def test_max_frames_is_per_source_in_the_stream_and_in_detect(tmp_path: Path, run_cli) -> None:
    """`max_frames=3` over two 10-frame videos reads 3 frames of each, 6 in all (3 in all before issue 34),
    and every image of a folder; `detect --max-frames 3` reads the very same frames."""
    pytest.importorskip("onnxruntime")
    from facemask_sdk import Detector

    videos = [_video(tmp_path / f"{name}.avi", 10) for name in ("a", "b")]
    sources = [str(video) for video in videos] + [str(SAMPLES)]
    with Detector(input_size=256) as detector:
        stream = detector.stream(sources, max_frames=3)
        read = Counter(frame.source for frame, _ in stream)
    images = {str(path): 1 for path in sorted(SAMPLES.glob("*.png"))}
    assert read == {str(videos[0]): 3, str(videos[1]): 3, **images}
    assert stream.totals.frames == 10 and stream.totals.warnings == []  # stopped by max_frames: not truncated
    out = tmp_path / "out"
    result = run_cli(["detect", *sources, "--max-frames", "3", "--input-size", "256", "--out", out])
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert Counter(record["source"] for record in records) == read


def test_events_tell_each_source_its_frames_and_failures(tmp_path: Path) -> None:
    """What `detect` hangs its outputs on: a folder's images (one unreadable) and then its video, each
    started and ended, the video stopped after `max_frames`; totals count what the events told."""
    pytest.importorskip("onnxruntime")
    from facemask_sdk import Detector

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not an image")
    shutil.copy(sorted(SAMPLES.glob("*.png"))[0], folder / "face.png")
    _video(folder / "clip.avi", 5)
    with Detector(input_size=256) as detector:
        stream = detector.stream(str(folder), max_frames=2)
        events = list(stream.events())
    assert [type(event) for event in events] == [
        SourceStarted,
        FrameFailed,
        FrameDetected,
        SourceEnded,
        SourceStarted,
        FrameDetected,
        FrameDetected,
        SourceEnded,
    ]
    assert events[1].frame.source == str(folder / "broken.png") and "cannot decode" in events[1].frame.error
    assert [event.frame.index for event in events[5:7]] == [0, 1] and events[6].time_s == pytest.approx(0.1)
    assert events[2].time_s is None and set(events[2].timing) >= {"preprocess_ms", "inference_ms", "total_ms"}
    assert events[-1].warning is None and events[-1].source.frames_read == 2  # no frame past the limit is read
    assert stream.totals.frames == 3 and [f["source"] for f in stream.totals.failures] == [str(folder / "broken.png")]


@pytest.mark.parametrize("max_frames", [0, -1, 2.5, True])
def test_a_bad_max_frames_is_refused_before_any_source_opens(max_frames) -> None:
    from facemask_sdk import Detector

    with Detector(input_size=256) as detector:
        with pytest.raises(FacemaskError, match=r"max_frames must be a whole number >= 1"):
            detector.stream("no-such-camera-or-file.mp4", max_frames=max_frames)
