"""The COCO metric on known answers: perfect predictions score 1.0, perturbed ones a lower, known value."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from facemask_sdk.detections import Detections  # noqa: E402
from facemask_sdk.metrics import evaluate_detections  # noqa: E402
from facemask_sdk.spec import CLASSES  # noqa: E402

GT = [
    Detections(np.array([[10, 10, 50, 60], [100, 20, 140, 70]], np.float32), np.ones(2), np.array([0, 1])),
    Detections(np.array([[30, 30, 90, 100]], np.float32), np.ones(1), np.array([2])),
]


def as_predictions(gt: list[Detections], shift: float = 0.0) -> list[Detections]:
    return [Detections(g.xyxy + np.float32(shift), np.full(len(g.class_ids), 0.9), g.class_ids) for g in gt]


def test_ground_truth_as_predictions_scores_one():
    result = evaluate_detections(GT, as_predictions(GT), CLASSES)
    assert result["map"] == pytest.approx(1.0) and result["map50"] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in result["ap_per_class"].values())


def test_shifted_boxes_score_what_their_iou_allows():
    # shifted by 10 px: IoU 1200/2800 = 0.43 for the 40x50 boxes (missed), 3000/5400 = 0.56 for the 60x70 one
    shifted = evaluate_detections(GT, as_predictions(GT, 10.0), CLASSES)
    assert shifted["ap50_per_class"] == pytest.approx({"with_mask": 0.0, "without_mask": 0.0, "mask_weared_incorrect": 1.0})
    assert shifted["map50"] == pytest.approx(1 / 3)
    # shifted by 4 px: IoU 1656/2344 = 0.71 (40x50) and 3696/4704 = 0.79 (60x70)
    result = evaluate_detections(GT, as_predictions(GT, 4.0), CLASSES)
    assert result["map50"] == pytest.approx(1.0)
    assert result["ap_per_class"]["with_mask"] == pytest.approx(0.5)  # 5 of 10 IoU thresholds <= 0.711
    assert result["ap_per_class"]["mask_weared_incorrect"] == pytest.approx(0.6)  # thresholds 0.5..0.75


def test_wrong_class_and_missing_predictions():
    wrong = [Detections(g.xyxy, np.ones(len(g.class_ids)), (g.class_ids + 1) % 3) for g in GT]
    assert evaluate_detections(GT, wrong, CLASSES)["map"] == pytest.approx(0.0)
    empty = [Detections.empty() for _ in GT]
    assert evaluate_detections(GT, empty, CLASSES)["map"] == 0.0


def test_lower_scored_false_positive_halves_precision_only_at_its_rank():
    preds = as_predictions(GT)
    fp = Detections(np.vstack([preds[0].xyxy, [[200, 200, 240, 250]]]), np.array([0.9, 0.9, 0.95]), np.array([0, 1, 0]))
    result = evaluate_detections(GT, [fp, preds[1]], CLASSES)
    # with_mask: the false positive ranks first, then the true one: precision 0.5 at full recall
    assert result["ap_per_class"]["with_mask"] == pytest.approx(0.5, abs=0.01)
    assert result["ap_per_class"]["without_mask"] == pytest.approx(1.0)
