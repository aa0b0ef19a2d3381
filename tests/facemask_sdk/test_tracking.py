"""FaceTracker on scripted detections, where every face's identity and class is known frame by frame."""

from __future__ import annotations

import numpy as np
import pytest

from facemask_sdk.detections import Detections
from facemask_sdk.errors import FacemaskError
from facemask_sdk.spec import CLASSES
from facemask_sdk.tracking import UNTRACKED, FaceTracker, TrackerConfig, people_summary

WITH, WITHOUT, INCORRECT = range(3)


def box(cx: float, cy: float, size: float) -> list[float]:
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


def frame(*faces: tuple[list[float], float, int]) -> Detections:
    """Detections from (box, score, class) triples."""
    if not faces:
        return Detections.empty()
    boxes, scores, classes = zip(*faces)
    return Detections(np.array(boxes), np.array(scores), np.array(classes))


def run(tracker: FaceTracker, frames: list[Detections]) -> list[np.ndarray]:
    return [tracker.update(detections).tracker_id for detections in frames]


def test_two_faces_crossing_keep_their_ids():
    # A walks right, B walks left 30 px lower; their boxes overlap for several frames in the middle.
    frames = [
        frame((box(50 + 8 * t, 200, 60), 0.9, WITH), (box(530 - 8 * t, 230, 60), 0.8, WITHOUT)) for t in range(60)
    ]
    tracker = FaceTracker(CLASSES)
    ids = run(tracker, frames)
    assert all((ids_t == UNTRACKED).all() for ids_t in ids[:2])  # tentative for min_frames - 1 frames
    a, b = ids[2]
    assert a != b and a > 0 and b > 0
    assert all(list(ids_t) == [a, b] for ids_t in ids[2:])  # no identity switch while they cross
    people = tracker.people
    assert [p.label for p in people] == ["with_mask", "without_mask"]
    assert [p.frames for p in people] == [60, 60]
    assert tracker.summary() == {
        "people": 2,
        "per_class": {"with_mask": 1, "without_mask": 1, "mask_weared_incorrect": 0},
        "compliance_rate": 0.5,
    }


def test_a_face_hidden_for_a_while_comes_back_as_the_same_person():
    frames = [frame((box(100 + 5 * t, 150, 50), 0.9, WITHOUT)) if not 20 <= t < 40 else frame() for t in range(70)]
    tracker = FaceTracker(CLASSES)
    ids = run(tracker, frames)
    assert ids[19][0] == ids[40][0] == ids[69][0] > 0
    [person] = tracker.people
    assert (person.frames, person.first_frame, person.last_frame) == (50, 0, 69)


def test_a_face_hidden_longer_than_lost_frames_is_a_new_person():
    frames = [frame((box(200, 150, 50), 0.9, WITHOUT)) if not 10 <= t < 20 else frame() for t in range(30)]
    tracker = FaceTracker(CLASSES, TrackerConfig(lost_frames=5))
    ids = run(tracker, frames)
    assert ids[9][0] > 0 and ids[22][0] > ids[9][0]
    assert len(tracker.people) == 2


def test_a_class_flicker_is_one_person_with_the_majority_class():
    classes = [WITHOUT if t % 10 < 7 else WITH for t in range(40)]
    tracker = FaceTracker(CLASSES)
    run(tracker, [frame((box(300, 200, 80), 0.7, c)) for c in classes])
    [person] = tracker.people
    assert person.label == "without_mask"
    assert person.share == pytest.approx(28 / 40)
    assert person.frames_per_class == {"with_mask": 12, "without_mask": 28, "mask_weared_incorrect": 0}


def test_the_vote_is_weighted_by_score():
    # 6 unsure with_mask frames lose to 4 confident without_mask frames
    faces = [(WITH, 0.55)] * 6 + [(WITHOUT, 0.95)] * 4
    tracker = FaceTracker(CLASSES)
    run(tracker, [frame((box(300, 200, 80), s, c)) for c, s in faces])
    assert tracker.people[0].label == "without_mask"


def test_short_false_boxes_and_weak_boxes_never_become_people():
    tracker = FaceTracker(CLASSES)
    flashes = [frame((box(100, 100, 40), 0.9, WITH)), frame((box(100, 100, 40), 0.9, WITH)), frame(), frame()]
    weak = [frame((box(400, 300, 40), 0.45, WITH)) for _ in range(20)]  # never confident: opens nothing
    ids = run(tracker, flashes + weak)
    assert tracker.people == [] and all((i == UNTRACKED).all() for i in ids)
    assert tracker.live_tracks == 0


def test_weak_detections_keep_a_followed_track_alive():
    scores = [0.9] * 5 + [0.3] * 10 + [0.9] * 5  # a face turning away scores low for a while
    tracker = FaceTracker(CLASSES, TrackerConfig(lost_frames=3))
    ids = run(tracker, [frame((box(200 + 3 * t, 200, 60), s, WITH)) for t, s in enumerate(scores)])
    assert len({int(i[0]) for i in ids[2:]}) == 1  # one id throughout, though unseen-confident > lost_frames
    assert len(tracker.people) == 1


def test_a_face_walking_towards_the_camera_stays_one_person():
    sizes = np.linspace(30, 240, 50)
    tracker = FaceTracker(CLASSES)
    ids = run(tracker, [frame((box(320, 240 + s / 4, s), 0.8, WITHOUT)) for s in sizes])
    assert len({int(i[0]) for i in ids[2:]}) == 1 and len(tracker.people) == 1


def test_new_scene_ends_tracks_and_ids_keep_counting():
    tracker = FaceTracker(CLASSES)
    run(tracker, [frame((box(100, 100, 50), 0.9, WITH)) for _ in range(5)])
    tracker.new_scene()
    ids = run(tracker, [frame((box(100, 100, 50), 0.9, WITHOUT)) for _ in range(5)])
    assert ids[-1][0] == 2
    assert [(p.id, p.label) for p in tracker.people] == [(1, "with_mask"), (2, "without_mask")]


def test_confirmed_now_reports_each_person_once_and_times_are_recorded():
    tracker = FaceTracker(CLASSES)
    confirmed = []
    for t in range(10):
        tracker.update(frame((box(100, 100, 50), 0.9, WITHOUT)), frame_index=t, time_s=t / 25)
        confirmed.append([p.id for p in tracker.confirmed_now])
    assert confirmed == [[], [], [1]] + [[]] * 7
    person = tracker.people[0]
    assert person.first_time_s == 0.0 and person.last_time_s == pytest.approx(9 / 25)
    assert person.to_dict()["last_time_s"] == 0.36


def test_tracks_stay_bounded_over_a_long_run():
    rng = np.random.default_rng(0)
    tracker = FaceTracker(CLASSES)
    for t in range(2000):
        faces = [(box(60 + 100 * k + rng.normal(0, 2), 200 + rng.normal(0, 2), 50), 0.9, WITH) for k in range(5)]
        if t % 97 == 0:  # now and then a one-frame false box
            faces.append((box(rng.uniform(0, 600), 400, 30), 0.6, WITHOUT))
        tracker.update(frame(*faces))
    assert tracker.live_tracks <= 6
    assert len(tracker.people) == 5


def test_tracked_detections_carry_ids_through_indexing_and_json():
    tracker = FaceTracker(CLASSES)
    for _ in range(3):
        tracked = tracker.update(frame((box(100, 100, 50), 0.9, WITH), (box(300, 100, 50), 0.45, WITH)))
    assert tracked.tracker_id.tolist() == [1, UNTRACKED]
    assert tracked[0].tracker_id.tolist() == [1]
    assert [d["tracker_id"] for d in tracked.to_dict()] == [1, -1]
    assert "tracker_id" not in frame((box(1, 1, 1), 0.5, WITH)).to_dict()[0]


def test_bad_configuration_and_inputs_are_refused():
    with pytest.raises(FacemaskError, match="min_frames"):
        TrackerConfig(min_frames=0)
    with pytest.raises(FacemaskError, match="high_score"):
        TrackerConfig(high_score=1.5)
    with pytest.raises(FacemaskError, match="classes"):
        FaceTracker(("a", "b")).update(frame((box(1, 1, 1), 0.5, WITH)))
    with pytest.raises(FacemaskError, match="tracker_id must have shape"):
        Detections(np.zeros((2, 4)), np.zeros(2), np.zeros(2), tracker_id=[1])


def test_people_summary_counts_people_not_frames():
    assert people_summary([], CLASSES)["compliance_rate"] is None


def test_a_face_seen_again_in_part_far_from_its_prediction_is_rematched_by_centre():
    # Going behind something on its right, the box shrinks to the face's visible left part; coming out,
    # the first boxes are its right part: IoU with the prediction is 0, the centre is near.
    def seen(t: int) -> list[float]:
        left, right = 100 + 10 * t, 180 + 10 * t  # the true face, 80 px wide, moving right
        return [left, 100, min(right, 300), 180] if left < 260 else [max(left, 340), 100, right, 180]

    frames = [frame((seen(t), 0.9, WITH)) if (seen(t)[2] - seen(t)[0]) >= 25 else frame() for t in range(40)]
    for rematch, people in ((1.0, 1), (0.0, 2)):
        tracker = FaceTracker(CLASSES, TrackerConfig(rematch_distance=rematch))
        run(tracker, frames)
        assert len(tracker.people) == people, rematch


def test_hidden_people_are_where_their_faces_should_be():
    tracker = FaceTracker(CLASSES)
    for t in range(5):
        tracker.update(frame((box(100 + 10 * t, 100, 50), 0.9, WITHOUT)))
    assert len(tracker.hidden_people()) == 0  # seen in the latest frame: its box is in the detections
    tracker.update(frame())  # the detector misses it once
    hidden = tracker.hidden_people()
    assert hidden.tracker_id.tolist() == [1] and hidden.labels == ["without_mask"]
    centre = (hidden.xyxy[0, :2] + hidden.xyxy[0, 2:]) / 2
    assert abs(centre[0] - 150) < 6 and abs(centre[1] - 100) < 1  # moved on at its velocity
    tracker.new_scene()
    assert len(tracker.hidden_people()) == 0
