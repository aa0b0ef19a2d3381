"""`facemask-sdk detect` end to end, in a subprocess: images, folders, globs, a video, errors, overwrite rules."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

LOW = ["--score-threshold", "0.05", "--max-detections", "5"]
"""The tiny random model scores ~0.01-0.1: a low threshold gives boxes to draw."""


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _no_display_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}


def test_images_folder(run_cli, tiny_onnx, sample_images, tmp_path) -> None:
    out = tmp_path / "out"
    result = run_cli(["detect", sample_images[0].parent, "--model", tiny_onnx, "--out", out, *LOW])
    assert result.returncode == 0, result.stderr[-2000:]

    for path in sample_images:
        written = cv2.imread(str(out / path.name))
        assert written is not None and written.shape == cv2.imread(str(path)).shape
        assert not np.array_equal(written, cv2.imread(str(path)))  # boxes were drawn
    records = _jsonl(out / "detections.jsonl")
    assert len(records) == len(sample_images)
    assert [Path(r["source"]).name for r in records] == [p.name for p in sample_images]
    first = records[0]
    assert first["frame"] == 0 and first["faces"] == len(first["detections"]) == 5
    assert set(first["detections"][0]) == {"box", "score", "class_id", "label"}
    assert set(first["timing_ms"]) == {"load", "preprocess", "inference", "postprocess", "total"}

    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 4 and summary["faces"] == 20 == sum(summary["per_class"].values())
    assert summary["compliance_rate"] == pytest.approx(summary["per_class"]["with_mask"] / 20)
    assert summary["fps"] > 0 and summary["outputs"]["annotated"] == [p.name for p in sample_images]
    assert summary["closeup_check"]["shrink"] == 3.0  # on by default, and said so
    assert "frames: 4  faces: 20" in result.stdout and "compliance rate:" in result.stdout and "FPS" in result.stdout

    again = run_cli(["detect", sample_images[0], "--model", tiny_onnx, "--out", out])
    assert again.returncode != 0
    assert again.stderr.strip().count("\n") == 0 and "--force" in again.stderr and "Traceback" not in again.stderr
    assert len(_jsonl(out / "detections.jsonl")) == 4  # untouched

    forced = run_cli(["detect", sample_images[0], "--model", tiny_onnx, "--out", out, "--force", "--no-closeup-check"])
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert len(_jsonl(out / "detections.jsonl")) == 1
    assert json.loads((out / "summary.json").read_text())["closeup_check"] is None


def test_video_round_trip(run_cli, tiny_onnx, sample_images, tmp_path) -> None:
    """10 frames written with OpenCV -> 10 JSONL lines and a 10-frame annotated mp4; --show without a
    display only warns."""
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    assert writer.isOpened()
    base = cv2.resize(cv2.imread(str(sample_images[0])), (320, 240))
    for i in range(10):
        writer.write(np.roll(base, 8 * i, axis=1))
    writer.release()

    out = tmp_path / "out"
    result = run_cli(["detect", video, "--model", tiny_onnx, "--out", out, "--show", *LOW], env=_no_display_env())
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warning: --show ignored" in result.stderr

    records = _jsonl(out / "detections.jsonl")
    assert [r["frame"] for r in records] == list(range(10))
    assert all(r["source"] == str(video) and (r["width"], r["height"]) == (320, 240) for r in records)
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert frames == 10
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 10 and summary["outputs"]["annotated"] == ["clip.mp4"]
    assert summary["faces_per_frame"] == pytest.approx(summary["faces"] / 10)
    assert summary["frames_with_faces"] <= 10 and "per frame" in result.stdout


def test_glob_and_default_out_folder(run_cli, tiny_onnx, sample_images, tmp_path) -> None:
    pattern = str(sample_images[0].parent / "*sss2*.png")  # maksssksksss29.png only
    for expected in ("exp1", "exp2"):
        result = run_cli(["detect", pattern, "--model", tiny_onnx], cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        out = tmp_path / "runs" / "detect" / expected
        assert (out / "maksssksksss29.png").is_file() and len(_jsonl(out / "detections.jsonl")) == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.png", "source not found"),
        (lambda tmp: _text(tmp / "clip.mp4"), "cannot open video file"),
        (lambda tmp: _text(tmp / "notes.txt"), "unsupported file type '.txt'"),
        (lambda tmp: tmp / "*.jpeg", "no images or videos match"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "has no images"),
    ],
    ids=["missing", "corrupt-video", "text-file", "empty-glob", "empty-folder"],
)
def test_unreadable_sources(run_cli, tiny_onnx, tmp_path, make, message) -> None:
    out = tmp_path / "out"
    result = run_cli(["detect", make(tmp_path), "--model", tiny_onnx, "--out", out])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not out.exists()


def test_missing_model_and_input_protection(run_cli, tiny_onnx, sample_images, tmp_path) -> None:
    result = run_cli(["detect", sample_images[0], "--model", tmp_path / "nope.onnx", "--out", tmp_path / "a"])
    assert result.returncode == 2 and "model file not found" in result.stderr and "Traceback" not in result.stderr

    folder = tmp_path / "images"
    folder.mkdir()
    image = folder / "face.png"
    image.write_bytes(sample_images[0].read_bytes())
    result = run_cli(["detect", folder, "--model", tiny_onnx, "--out", folder, "--force"])
    assert result.returncode == 2 and "would overwrite an input" in result.stderr
    assert image.read_bytes() == sample_images[0].read_bytes()


def _text(path: Path) -> Path:
    path.write_text("not media\n")
    return path


def test_bad_files_among_many_are_skipped_named_and_fail_the_run(run_cli, tiny_onnx, sample_images, tmp_path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in sample_images[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    data = sample_images[2].read_bytes()
    (folder / "b_truncated.png").write_bytes(data[: len(data) // 3])
    _text(folder / "c_notes.jpg")
    out = tmp_path / "out"
    result = run_cli(["detect", folder, "--model", tiny_onnx, "--out", out, *LOW])
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert any("b_truncated.png" in line for line in errors) and any("c_notes.jpg" in line for line in errors)
    assert "Traceback" not in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 2 and len(_jsonl(out / "detections.jsonl")) == 2
    assert sorted(Path(f["source"]).name for f in summary["failures"]) == ["b_truncated.png", "c_notes.jpg"]
    assert all("cannot decode image" in f["reason"] for f in summary["failures"])


def test_force_replaces_only_detect_outputs(run_cli, tiny_onnx, sample_images, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "summary.json"
    mine.write_text('{"my": "own notes"}')
    result = run_cli(["detect", sample_images[0], "--model", tiny_onnx, "--out", out, "--force"])
    assert result.returncode == 2 and "no earlier detect run wrote (summary.json)" in result.stderr
    assert mine.read_text() == '{"my": "own notes"}'
    other = tmp_path / "out2"
    assert run_cli(["detect", sample_images[0], "--model", tiny_onnx, "--out", other]).returncode == 0
    (other / "keep.txt").write_text("mine")
    again = run_cli(["detect", sample_images[0], "--model", tiny_onnx, "--out", other, "--force"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert (other / "keep.txt").read_text() == "mine"


def test_truncated_video_warns_with_both_counts(run_cli, tiny_onnx, sample_images, tmp_path) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    base = cv2.resize(cv2.imread(str(sample_images[0])), (160, 120))
    for i in range(20):
        writer.write(np.roll(base, 4 * i, axis=1))
    writer.release()
    data = bytearray(video.read_bytes())
    middle = len(data) // 2
    data[middle : middle + len(data) // 4] = bytes(len(data) // 4)  # zero a quarter of the file mid-way
    video.write_bytes(bytes(data))
    out = tmp_path / "out"
    result = run_cli(["detect", video, "--model", tiny_onnx, "--out", out])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] < 20
    assert f"read {summary['frames']} of the 20 frames" in result.stderr
    assert summary["warnings"] and "of the 20 frames" in summary["warnings"][0]


def test_silent_stream_times_out(run_cli, tiny_onnx, tmp_path) -> None:
    """A server on 127.0.0.1 that accepts the connection and never answers: one "timed out" line."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/camera"
        result = run_cli(["detect", url, "--model", tiny_onnx, "--out", tmp_path / "out", "--timeout", "1"])
    finally:
        server.close()
        for connection in held:
            connection.close()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "timed out after" in lines[0], result.stderr


@pytest.mark.parametrize(("sent", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_stopped_run_writes_its_summary_and_says_it_was_stopped(sent, code, tmp_path) -> None:
    """`docker stop` sends SIGTERM, Ctrl-C SIGINT: both end the run with what was done written and a
    non-zero exit code (128 + the signal), never a summary-less folder that --force then refuses."""
    import signal
    import subprocess
    import sys
    import time

    clip = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (160, 120))
    for i in range(600):
        writer.write(np.full((120, 160, 3), i % 255, np.uint8))
    writer.release()
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "facemask_sdk.cli.main", "detect", str(clip), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_no_display_env(),
        # a shell starts background jobs with SIGINT ignored, and Python then keeps ignoring it: give the
        # child the default disposition, as a terminal would, whatever started this test run
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while not ((out / "detections.jsonl").is_file() and (out / "detections.jsonl").stat().st_size):
            assert process.poll() is None and time.monotonic() < deadline, "detect ended or never started"
            time.sleep(0.2)
        process.send_signal(getattr(signal, sent))
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, stderr[-2000:]
    assert "interrupted; writing what was done so far" in stderr and "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and 0 < summary["frames"] < 600
    assert len(_jsonl(out / "detections.jsonl")) == summary["frames"]


def test_input_size_option(run_cli, tiny_onnx, tiny_any_size_export, sample_images, tmp_path) -> None:
    out = tmp_path / "sized"
    result = run_cli(
        ["detect", sample_images[0], "--model", tiny_any_size_export.path, "--input-size", "384", "--out", out, *LOW]
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "summary.json").read_text())["input_size"] == 384
    fixed = run_cli(["detect", sample_images[0], "--model", tiny_onnx, "--input-size", "384", "--out", tmp_path / "f"])
    assert fixed.returncode == 2 and fixed.stderr.strip().splitlines()[-1].startswith("error:")
    assert "--dynamic-size" in fixed.stderr and "Traceback" not in fixed.stderr
    odd = run_cli(
        [
            "detect",
            sample_images[0],
            "--model",
            tiny_any_size_export.path,
            "--input-size",
            "300",
            "--out",
            tmp_path / "o",
        ]
    )
    assert odd.returncode == 2 and "multiple of 128" in odd.stderr
