"""The close-up check (`facemask_sdk.closeups`): its geometry and matching on constructed detections, and on
the shipped model a real close-up (a CC0 sample cropped around one face) whose class it puts right."""

from __future__ import annotations

import numpy as np
import pytest

from facemask_sdk.closeups import (
    DEFAULT_CLOSEUP_CHECK,
    CloseupCheck,
    check_closeups,
    checked_indices,
    fill_colour,
    shrink_frame,
    take_closeup_classes,
)
from facemask_sdk.detections import Detections
from facemask_sdk.errors import FacemaskError

INCORRECT = 2


def _detections(boxes, scores, class_ids, tracker_id=None) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), scores, class_ids, tracker_id=tracker_id)


def test_shrink_frame_puts_the_image_a_third_of_its_size_at_the_top_left_on_the_mean_colour():
    image = np.zeros((300, 600, 3), np.uint8)
    image[150:300, 300:600] = (0, 0, 255)  # the bottom-right quarter red
    fill = fill_colour((123.675, 116.28, 103.53))
    assert fill == (104, 116, 124)
    shrunk = shrink_frame(image, CloseupCheck(shrink=3.0), fill)
    assert shrunk.shape == image.shape and shrunk.dtype == np.uint8
    assert (shrunk[51:99, 101:199] == (0, 0, 255)).all()  # the red quarter, a third of its size
    assert (shrunk[:49, :99] == 0).all()
    assert (shrunk[101:, :] == fill).all() and (shrunk[:, 201:] == fill).all()


def test_large_confident_faces_take_the_shrunk_pass_class_and_keep_their_box_score_and_track():
    hw = (300, 300)
    first = _detections(
        [[0, 0, 150, 150], [200, 200, 230, 230], [150, 150, 300, 300], [0, 150, 150, 300]],
        [0.9, 0.8, 0.2, 0.9],
        [0, 0, 0, 0],
        [7, 8, 9, 10],
    )
    # the shrunk pass sees the frame a third of its size: the first face at [0, 0, 50, 50], the third at
    # [50, 50, 100, 100]; only a faint box where the fourth is
    shrunk = _detections(
        [[1, 1, 51, 50], [60, 60, 70, 70], [50, 50, 100, 100], [0, 50, 50, 100]], [0.5, 0.9, 0.9, 0.1], [1, 2, 1, 2]
    )
    checked = take_closeup_classes(first, shrunk, hw, DEFAULT_CLOSEUP_CHECK)
    # the small face and the faint one are not checked; the fourth has no confident match
    assert checked.class_ids.tolist() == [1, 0, 0, 0]
    np.testing.assert_array_equal(checked.xyxy, first.xyxy)
    np.testing.assert_array_equal(checked.scores, first.scores)
    assert checked.tracker_id.tolist() == [7, 8, 9, 10]
    assert first.class_ids.tolist() == [0, 0, 0, 0]  # the input is not changed
    assert take_closeup_classes(first, Detections.empty(), hw, DEFAULT_CLOSEUP_CHECK) is first


def test_only_confident_faces_above_the_size_are_checked():
    hw = (400, 400)
    check = DEFAULT_CLOSEUP_CHECK
    boxes = [[0, 0, 130, 130], [0, 0, 130, 130], [200, 200, 310, 310], [0, 0, 400, 400]]  # 0.325, 0.325, 0.275, 1
    found = _detections(boxes, [check.min_score, check.min_score - 0.01, 0.99, 0.5], [0, 0, 0, 0])
    assert checked_indices(found, hw, check).tolist() == [0, 3]
    assert checked_indices(Detections.empty(), hw, check).tolist() == []


def test_check_closeups_runs_the_second_pass_once_for_the_frames_that_need_it():
    hw = (300, 300)
    small = _detections([[0, 0, 30, 30]], [0.9], [0])
    large = _detections([[0, 0, 150, 150]], [0.9], [0])
    calls = []

    def detect_shrunk(indices):
        calls.append(indices)
        return [_detections([[0, 0, 50, 50]], [0.9], [1]) for _ in indices]

    checked = check_closeups([small, large, small, large], [hw] * 4, detect_shrunk, DEFAULT_CLOSEUP_CHECK)
    assert calls == [[1, 3]]
    assert [d.class_ids.tolist() for d in checked] == [[0], [1], [0], [1]]
    assert check_closeups([small], [hw], detect_shrunk, DEFAULT_CLOSEUP_CHECK)[0] is small and len(calls) == 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"shrink": 1.0}, "shrink must be a number above 1"),
        ({"shrink": True}, "shrink must be a number > 0"),
        ({"min_face_size": 1.5}, "min_face_size"),
        ({"match_iou": -0.1}, "match_iou"),
        ({"match_iou": 0.0}, "match_iou must be above 0"),
    ],
)
def test_settings_out_of_range_are_refused(settings, message):
    with pytest.raises(FacemaskError, match=message):
        CloseupCheck(**settings)
    assert CloseupCheck(shrink=np.float32(2.5)).shrink == 2.5  # a NumPy number is a number


def test_boxes_come_back_by_each_axis_own_shrink():
    """A 1000 x 500 frame shrinks to 333 x 167: the second pass's boxes scale back by 1000/333 and 500/167."""
    hw = (500, 1000)
    first = _detections([[600, 200, 1000, 500]], [0.9], [0])
    exact = np.array([600 * 333 / 1000, 200 * 167 / 500, 333, 167], np.float32)
    for offset, expected_class in ((0.0, 1), (-60.0, 0)):  # 60 px off in the shrunk frame: IoU 0.38
        shrunk = _detections([exact + [offset, 0, offset, 0]], [0.9], [1])
        assert take_closeup_classes(first, shrunk, hw, DEFAULT_CLOSEUP_CHECK).class_ids.tolist() == [expected_class]


# -- on the shipped model ----------------------------------------------------------------------------


def test_the_detector_corrects_a_real_closeup_and_equals_the_two_passes_composed(closeup_frame, sample_images):
    pytest.importorskip("onnxruntime")
    from facemask_sdk import Detector

    closeup = closeup_frame
    with Detector(closeup_check=False) as plain, Detector() as checked:
        first = plain(closeup)
        second = plain(shrink_frame(closeup, DEFAULT_CLOSEUP_CHECK, fill_colour(plain.spec.mean)))
        found = checked(closeup)
        assert checked.last_timing["closeup_checks"] == 1
        for photo in sample_images:  # photos of small faces: one pass
            checked(photo)
            assert checked.last_timing["closeup_checks"] == 0, photo.name
    assert first.labels[0] == "with_mask"  # the model alone gets this close-up wrong
    expected = take_closeup_classes(first, second, closeup.shape[:2], DEFAULT_CLOSEUP_CHECK)
    np.testing.assert_array_equal(found.class_ids, expected.class_ids)
    np.testing.assert_array_equal(found.xyxy, first.xyxy)
    assert found.class_ids[0] == INCORRECT  # the label: the mask is worn incorrectly


def test_the_check_needs_one_box_per_face():
    pytest.importorskip("onnxruntime")
    from facemask_sdk import Detector

    with Detector(class_agnostic=False) as detector:
        assert detector.closeup_check is None  # off by default with class-aware boxes
    with pytest.raises(FacemaskError, match="needs class_agnostic=True"):
        Detector(class_agnostic=False, closeup_check=True)
    with pytest.raises(FacemaskError, match="closeup_check must be"):
        Detector(closeup_check="yes")
