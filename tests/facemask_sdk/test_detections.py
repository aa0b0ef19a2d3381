"""`Detections`: validation table, indexing, iteration, summary and JSON output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facemask_sdk.detections import Detection, Detections
from facemask_sdk.errors import FacemaskError
from facemask_sdk.spec import CLASSES


def make(n: int = 4, class_ids: list[int] | None = None) -> Detections:
    xyxy = np.arange(n * 4, dtype=np.float64).reshape(n, 4) + [0, 0, 10, 10]
    scores = np.linspace(0.9, 0.5, n)
    ids = class_ids if class_ids is not None else [i % 3 for i in range(n)]
    return Detections(xyxy, scores, np.array(ids), CLASSES)


@pytest.mark.parametrize(
    ("xyxy", "scores", "class_ids", "error"),
    [
        (np.zeros((2, 4)), np.zeros(2), np.zeros(2), None),
        ([[1, 2, 3, 4]], [0.5], [2], None),
        (np.zeros((0, 4)), np.zeros(0), np.zeros(0), None),
        ([], [], [], None),
        (np.zeros((2, 3)), np.zeros(2), np.zeros(2), r"xyxy must have shape \[N, 4\], got \[2, 3\]"),
        (np.zeros(4), np.zeros(1), np.zeros(1), r"xyxy must have shape \[N, 4\], got \[4\]"),
        (np.zeros((2, 4)), np.zeros(3), np.zeros(2), r"scores must have shape \[2\] .* got \[3\]"),
        (np.zeros((2, 4)), np.zeros((2, 1)), np.zeros(2), r"scores must have shape \[2\] .* got \[2, 1\]"),
        (np.zeros((2, 4)), np.zeros(2), np.zeros(1), r"class_ids must have shape \[2\] .* got \[1\]"),
        (np.zeros((1, 4)), np.zeros(1), [3], r"class_ids must be in \[0, 3\)"),
        (np.zeros((1, 4)), np.zeros(1), [-1], r"class_ids must be in \[0, 3\)"),
        (np.zeros((1, 4)), np.zeros(1), [0.5], "class_ids must be whole numbers"),
        (np.zeros((1, 4)), ["high"], [0], "scores must be a numeric array"),
    ],
)
def test_validation(xyxy, scores, class_ids, error: str | None) -> None:
    if error is None:
        dets = Detections(xyxy, scores, class_ids, CLASSES)
        assert dets.xyxy.dtype == np.float32 and dets.xyxy.shape == (len(dets), 4)
        assert dets.scores.dtype == np.float32 and dets.class_ids.dtype == np.int64
    else:
        with pytest.raises(FacemaskError, match=error):
            Detections(xyxy, scores, class_ids, CLASSES)


def test_empty() -> None:
    dets = Detections.empty()
    assert len(dets) == 0 and dets.xyxy.shape == (0, 4) and dets.labels == [] and list(dets) == []
    assert dets.class_names == CLASSES
    assert dets.summary() == {"faces": 0, "per_class": dict.fromkeys(CLASSES, 0), "compliance_rate": None}
    assert dets.to_dict() == []


def test_labels_and_iteration() -> None:
    dets = make(4)
    assert dets.labels == ["with_mask", "without_mask", "mask_weared_incorrect", "with_mask"]
    items = list(dets)
    assert all(isinstance(item, Detection) for item in items)
    box, score, class_id, label = items[1]
    np.testing.assert_array_equal(box, dets.xyxy[1])
    assert (score, class_id, label) == (pytest.approx(dets.scores[1]), 1, "without_mask")


@pytest.mark.parametrize(
    ("index", "expected_rows"),
    [
        (0, [0]),
        (-1, [3]),
        (np.int64(2), [2]),
        (slice(1, 3), [1, 2]),
        (slice(None, None, -1), [3, 2, 1, 0]),
        (np.array([True, False, True, False]), [0, 2]),
        ([3, 0], [3, 0]),
        (np.array([], dtype=np.int64), []),
        ([], []),
    ],
)
def test_indexing(index, expected_rows: list[int]) -> None:
    dets = make(4)
    subset = dets[index]
    assert isinstance(subset, Detections) and subset.class_names == dets.class_names
    np.testing.assert_array_equal(subset.xyxy, dets.xyxy[expected_rows].reshape(-1, 4))
    np.testing.assert_array_equal(subset.scores, dets.scores[expected_rows])
    np.testing.assert_array_equal(subset.class_ids, dets.class_ids[expected_rows])


@pytest.mark.parametrize(
    ("index", "error"),
    [
        (4, IndexError),
        (-5, IndexError),
        (np.array([True, False]), FacemaskError),
        (np.array([0.5]), FacemaskError),
    ],
)
def test_bad_indexing(index, error: type[Exception]) -> None:
    with pytest.raises(error):
        make(4)[index]


def test_filter_by_score_mask() -> None:
    dets = make(4)
    assert len(dets[dets.scores > 0.6]) == 3


@pytest.mark.parametrize(
    ("class_ids", "per_class", "rate"),
    [
        ([0, 0, 0, 0], {"with_mask": 4, "without_mask": 0, "mask_weared_incorrect": 0}, 1.0),
        ([0, 1, 2, 0], {"with_mask": 2, "without_mask": 1, "mask_weared_incorrect": 1}, 0.5),
        ([1, 2, 1, 1], {"with_mask": 0, "without_mask": 3, "mask_weared_incorrect": 1}, 0.0),
    ],
)
def test_summary(class_ids: list[int], per_class: dict, rate: float) -> None:
    summary = make(4, class_ids).summary()
    assert summary == {"faces": 4, "per_class": per_class, "compliance_rate": rate}


def test_summary_without_a_with_mask_class() -> None:
    dets = Detections([[0, 0, 1, 1]], [0.9], [0], ("face",))
    assert dets.summary() == {"faces": 1, "per_class": {"face": 1}, "compliance_rate": None}


def test_to_dict_json_round_trip() -> None:
    dets = make(3)
    items = dets.to_dict()
    assert json.loads(json.dumps(items)) == items
    box, score = dets.xyxy[1].tolist(), float(dets.scores[1])
    expected = {"box": box, "score": score, "class_id": 1, "label": "without_mask"}
    assert items[1] == expected
    rebuilt = Detections(
        [d["box"] for d in items], [d["score"] for d in items], [d["class_id"] for d in items], CLASSES
    )
    np.testing.assert_array_equal(rebuilt.xyxy, dets.xyxy)
    np.testing.assert_array_equal(rebuilt.scores, dets.scores)
    np.testing.assert_array_equal(rebuilt.class_ids, dets.class_ids)
