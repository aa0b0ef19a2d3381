"""facemask_sdk.stream: `Detector.stream` gives the CLI's detections and summary to a library user."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from facemask_sdk.detections import Detections
from facemask_sdk.stream import StreamTotals

ROOT = Path(__file__).resolve().parents[2]


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
