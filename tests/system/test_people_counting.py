"""People counted on videos whose people are known: the shipped model, the tracker, `detect --track`,
`--blur`, on the clips of `facemask_tools.benchmarks.tracking_clips` (CC0 sample faces moving over a
background: crossing, hidden behind a pillar, walking towards the camera; a pan over a real photo)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the shipped model runs on onnxruntime (pip install -e '.[onnx]')")

from facemask_sdk.detector import Detector  # noqa: E402
from facemask_sdk.tracking import FaceTracker  # noqa: E402
from facemask_tools.benchmarks.tracking_clips import CLIPS, identity_switches  # noqa: E402

MAX_ID_SWITCHES = 0
"""Measured on every clip with the shipped model: none (facemask_tools/benchmarks/RESULTS.md, the tracker section)."""


@pytest.fixture(scope="module")
def detector():
    with Detector() as detector:
        yield detector


@pytest.fixture(scope="module")
def clip_detections(detector) -> dict:
    """Each clip and the shipped model's detections on each of its frames (computed once)."""
    return {
        name: (clip, [detector(frame) for frame in clip.frames]) for name, make in CLIPS.items() for clip in [make()]
    }


@pytest.mark.parametrize("name", list(CLIPS))
def test_each_clip_counts_its_people_per_class_exactly(clip_detections, name):
    clip, per_frame = clip_detections[name]
    tracker = FaceTracker(per_frame[0].class_names)
    tracked = [tracker.update(detections, index, index / clip.fps) for index, detections in enumerate(per_frame)]
    summary = tracker.summary()
    assert summary["per_class"] == clip.people_per_class(), (name, [p.to_dict() for p in tracker.people])
    switches, ids_per_person = identity_switches(clip, tracked)
    assert switches <= MAX_ID_SWITCHES, ids_per_person
    assert sorted(ids_per_person) == sorted(clip.people)  # every person was followed
    faces_over_frames = sum(len(d) for d in per_frame)
    assert faces_over_frames > 5 * summary["people"]  # what counting frames instead of people would report


def test_without_the_rematch_pass_a_face_coming_out_from_behind_another_is_a_new_person(clip_detections):
    from facemask_sdk.tracking import TrackerConfig

    clip, per_frame = clip_detections["crossing"]
    tracker = FaceTracker(per_frame[0].class_names, TrackerConfig(rematch_distance=0))
    for detections in per_frame:
        tracker.update(detections)
    assert tracker.summary()["people"] == len(clip.people) + 1


def test_stream_with_tracking_counts_people_and_reports_the_unmasked_once(detector, tmp_path):
    clip = CLIPS["crossing"]()
    video = clip.write(tmp_path / "crossing.mp4")
    stream = detector.stream(str(video), track=True)
    confirmed = []
    for frame, detections in stream:
        assert detections.tracker_id is not None and len(detections.tracker_id) == len(detections)
        confirmed += [(person.id, person.label, frame.index) for person in stream.confirmed_now]
    summary = stream.totals.summary()
    assert summary["people"]["per_class"] == clip.people_per_class()
    assert summary["people"]["compliance_rate"] == 0.5
    assert summary["faces"] > 60  # faces are still counted per frame beside the people
    assert sorted(label for _, label, _ in confirmed) == ["with_mask", "without_mask"]
    assert all(index <= 5 for _, _, index in confirmed)  # both in view from the start: confirmed early


def _detect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "facemask_sdk.cli.main", "detect", *args], capture_output=True, text=True, timeout=600
    )


def test_detect_track_writes_people_events_and_a_summary_over_people(tmp_path):
    clip = CLIPS["pillar"]()
    video = clip.write(tmp_path / "pillar.mp4")
    out = tmp_path / "out"
    result = _detect(str(video), "--track", "--out", str(out))
    assert result.returncode == 0, result.stderr
    people = [json.loads(line) for line in (out / "people.jsonl").read_text().splitlines()]
    assert sorted(p["label"] for p in people) == ["mask_weared_incorrect", "without_mask"]
    walker = next(p for p in people if p["label"] == "without_mask")
    assert walker["first_frame"] == 0 and walker["last_frame"] >= 30  # one person before and after the pillar
    assert walker["last_time_s"] == pytest.approx(walker["last_frame"] / clip.fps, abs=1e-3)
    assert 0.5 < walker["share"] <= 1 and walker["frames"] < len(clip.frames)  # hidden frames not counted
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert sorted((e["event"], e["label"]) for e in events) == [
        ("person_without_mask", "mask_weared_incorrect"),
        ("person_without_mask", "without_mask"),
    ]
    assert all(e["frame"] == 2 and e["time_s"] == pytest.approx(2 / clip.fps, abs=1e-3) for e in events)
    assert "event: person" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["people"]["people"] == 2 and summary["people"]["compliance_rate"] == 0.0
    assert summary["outputs"]["people"] == "people.jsonl" and (out / "pillar.mp4").is_file()
    assert "people: 2" in result.stdout
    records = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert {d["tracker_id"] for r in records for d in r["detections"]} >= {1, 2}
    # --force replaces the tracking outputs of this earlier run
    again = _detect(str(video), "--track", "--out", str(out), "--force", "--no-media")
    assert again.returncode == 0, again.stderr


def _detail_kept(written: np.ndarray, original: np.ndarray, box) -> float:
    """Correlation, inside a face box, of the written frame's fine detail with the original's (eyes,
    mouth, hair: the image minus its blur at a twentieth of the face): about 1 for a face kept (video
    compression and drawn labels lower it a little), about 0 once the face is blurred or pixelated."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    sigma = max(1.0, (y2 - y1) / 20)

    def fine(image: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float64)
        return (grey - cv2.GaussianBlur(grey, (0, 0), sigma))[max(y1, 0) : y2, max(x1, 0) : x2].ravel()

    return float(np.corrcoef(fine(written), fine(original))[0, 1])


def test_detect_blur_leaves_no_face_pixel_as_it_was(sample_images, tmp_path):
    for blur, out in (("all", tmp_path / "blurred"), ("none", tmp_path / "plain")):
        result = _detect(str(sample_images[0].parent), "--blur", blur, "--out", str(out))
        assert result.returncode == 0, result.stderr
    checked = 0
    for record in (json.loads(line) for line in (tmp_path / "blurred" / "detections.jsonl").read_text().splitlines()):
        name = Path(record["source"]).name
        original = cv2.imread(record["source"])
        blurred, plain = cv2.imread(str(tmp_path / "blurred" / name)), cv2.imread(str(tmp_path / "plain" / name))
        for detection in record["detections"]:
            x1, y1, x2, y2 = (int(round(v)) for v in detection["box"])
            face = (slice(y1, y2), slice(x1, x2))
            unchanged = np.all(blurred[face] == original[face], axis=2).mean()
            assert unchanged < 0.02, (name, detection)  # not one face kept as it was
            assert np.all(plain[face] == original[face], axis=2).mean() > 0.4  # the check can fail
            checked += 1
    assert checked >= 12  # the four samples hold 20 labelled faces; the shipped model finds 13 at 0.4


def test_detect_blur_unmasked_blurs_unmasked_people_in_video_only(tmp_path):
    clip = CLIPS["crossing"]()
    video = clip.write(tmp_path / "crossing.mp4")
    out = tmp_path / "out"
    result = _detect(str(video), "--track", "--blur", "unmasked", "--out", str(out))
    assert result.returncode == 0, result.stderr
    capture = cv2.VideoCapture(str(out / "crossing.mp4"))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    assert len(frames) == len(clip.frames)
    for index in (5, 35):  # the two apart, before and after they cross
        truth = {label: box for box, label in clip.truth[index].values()}
        masked, unmasked = truth["with_mask"], truth["without_mask"]
        assert _detail_kept(frames[index], clip.frames[index], unmasked) < 0.3  # measured 0.14-0.20
        assert _detail_kept(frames[index], clip.frames[index], masked) > 0.5  # measured 0.65 (mp4v compression)


def test_no_media_writes_only_json(sample_images, tmp_path):
    out = tmp_path / "out"
    result = _detect(str(sample_images[0]), "--no-media", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["detections.jsonl", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["blur"] == "no media written"


def test_detect_track_counts_the_people_of_a_clip_read_from_a_video_file(tmp_path):
    """The pan over a real photo, through `detect --track` from a video file (every clip's count is checked on
    its frames above; the pillar clip's command line above). Written losslessly: on the mp4v-compressed pan
    clip one borderline face (mean score 0.51 on the lossless frames, in view for about 15 of the 40) falls
    under the 0.5 a track needs to count, and that clip then counts 2 of its 3 masked people
    (facemask_tools/benchmarks/RESULTS.md, tracker section)."""
    name = "pan"
    clip = CLIPS[name]()
    video = clip.write(tmp_path / f"{name}.mkv")
    result = _detect(str(video), "--track", "--no-media", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["people"]["per_class"] == clip.people_per_class()
    assert len((tmp_path / "out" / "people.jsonl").read_text().splitlines()) == len(clip.people)


def test_track_over_a_folder_of_frames_uses_their_order(tmp_path):
    clip = CLIPS["crossing"]()
    frames = tmp_path / "frames"
    frames.mkdir()
    for index, image in enumerate(clip.frames):
        cv2.imwrite(str(frames / f"frame{index:03d}.png"), image)
    result = _detect(str(frames), "--track", "--no-media", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "as the frames of one scene" in result.stderr
    people = [json.loads(line) for line in (tmp_path / "out" / "people.jsonl").read_text().splitlines()]
    assert sorted(p["label"] for p in people) == ["with_mask", "without_mask"]
    assert all(p["first_frame"] == 0 and p["last_frame"] == len(clip.frames) - 1 for p in people)
    assert all(p["first_time_s"] is None for p in people)  # images carry no time


def test_force_removes_the_earlier_runs_outputs_it_does_not_rewrite(sample_images, tmp_path):
    out = tmp_path / "out"
    assert _detect(str(sample_images[0]), "--out", str(out)).returncode == 0
    assert (out / sample_images[0].name).is_file()
    private = _detect(str(sample_images[0]), "--no-media", "--force", "--out", str(out))
    assert private.returncode == 0, private.stderr
    assert sorted(p.name for p in out.iterdir()) == ["detections.jsonl", "summary.json"]  # no unblurred image left
    again = _detect(str(sample_images[0]), "--blur", "all", "--force", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert (out / sample_images[0].name).is_file()
