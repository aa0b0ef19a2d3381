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
    assert shifted["ap50_per_class"] == pytest.approx(
        {"with_mask": 0.0, "without_mask": 0.0, "mask_weared_incorrect": 1.0}
    )
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


def test_ap_at_one_iou_counts_boxes_a_stricter_threshold_misses():
    # shifted by 10 px the two 40x50 boxes overlap at IoU 0.43: missed at 0.5, found at 0.3
    shifted = as_predictions(GT, 10.0)
    result = evaluate_detections(GT, shifted, CLASSES, iou_threshold=0.3)
    assert result["iou_threshold"] == 0.3 and result["ap_at_iou"] == pytest.approx(1.0)
    assert result["map50"] == pytest.approx(1 / 3)  # the COCO figures are unchanged by the extra threshold
    assert result["map"] == pytest.approx(evaluate_detections(GT, shifted, CLASSES)["map"])
    assert evaluate_detections(GT, shifted, CLASSES, iou_threshold=0.6)["ap_at_iou"] == pytest.approx(0.0)


def test_a_class_missing_from_the_labels_has_no_ap():
    two_class = [GT[0]]  # with_mask and without_mask only, as in a two-class set
    result = evaluate_detections(two_class, as_predictions(two_class), CLASSES, iou_threshold=0.3)
    assert result["ap_per_class"]["mask_weared_incorrect"] is None
    assert result["ap_at_iou_per_class"]["mask_weared_incorrect"] is None
    assert result["ap_at_iou"] == pytest.approx(1.0)


def test_size_breakdown_buckets_faces_and_counts_found_right_class_and_confusion():
    from facemask_sdk.metrics import FACE_SIZE_BUCKETS, bucket_name, size_breakdown

    # a 1000 px wide image: faces of side 30 (0.03), 100 (0.1), 600 (0.6)
    truth = Detections(
        np.array([[0, 0, 30, 30], [100, 100, 200, 200], [300, 0, 900, 600]], np.float32),
        np.ones(3),
        np.array([0, 1, 1]),
    )
    said = Detections(
        np.array([[0, 0, 30, 30], [110, 100, 210, 200], [300, 0, 900, 600], [950, 0, 990, 40]], np.float32),
        np.array([0.9, 0.8, 0.7, 0.6]),
        np.array([0, 0, 1, 2]),
    )
    low = Detections(np.array([[0, 0, 30, 30]], np.float32), np.array([0.2]), np.array([0]))
    result = size_breakdown([truth, truth], [said, low], [(800, 1000), (800, 1000)], CLASSES, iou_threshold=0.5)
    rows = result["buckets"]
    assert (
        list(rows)
        == [bucket_name(b) for b in FACE_SIZE_BUCKETS]
        == ["<0.06", "0.06-0.12", "0.12-0.25", "0.25-0.5", ">0.5"]
    )
    assert (rows["<0.06"]["faces"], rows["<0.06"]["found"], rows["<0.06"]["right_class"]) == (
        2,
        1,
        1,
    )  # score 0.2 is no find
    assert (
        rows["0.06-0.12"]["right_class_share"] == 0.0
        and rows["0.06-0.12"]["confusion"]["without_mask"]["with_mask"] == 1
    )
    assert rows[">0.5"]["found_share"] == 0.5 and rows[">0.5"]["confusion"]["without_mask"] == {
        "with_mask": 0,
        "without_mask": 1,
        "mask_weared_incorrect": 0,
        "missed": 1,
    }
    assert rows[">0.5"]["right_class_share"] == 0.5 and rows["<0.06"]["right_class_share"] == 0.5  # over labelled faces
    assert rows["0.12-0.25"]["faces"] == 0 and rows["0.12-0.25"]["found_share"] is None
    assert (result["confident_predictions"], result["unmatched_predictions"]) == (
        4,
        1,
    )  # the box at x 950 is on no face


def test_the_best_prediction_of_a_face_is_the_one_that_overlaps_it_most():
    from facemask_sdk.metrics import size_breakdown

    truth = Detections(np.array([[100, 100, 300, 300]], np.float32), np.ones(1), np.array([1]))
    said = Detections(
        np.array([[100, 100, 300, 300], [120, 120, 320, 320]], np.float32), np.array([0.5, 0.9]), np.array([1, 0])
    )  # the exact box says without_mask, a looser one scores higher
    rows = size_breakdown([truth], [said], [(500, 500)], CLASSES, iou_threshold=0.3)["buckets"]
    assert rows["0.25-0.5"]["right_class"] == 1 and rows["0.25-0.5"]["confusion"]["without_mask"]["without_mask"] == 1


@pytest.mark.parametrize("extra", [None, 0.3, 0.5, 0.5000001])
def test_coco_figures_are_cocoevals_own_whatever_extra_iou_is_asked(extra):
    """map / map50 / map75 equal COCOeval's summary on a messy set, with or without an extra threshold."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    truth, said, images, annotations, results = [], [], [], [], []
    for image_id in range(1, 31):
        boxes = rng.uniform(0, 300, (4, 2)).repeat(2, 1) + np.array([0, 0, 40, 50]) * rng.uniform(0.5, 2, (4, 1))
        boxes = boxes.astype(np.float32)
        classes = rng.integers(0, 3, 4)
        noisy = boxes + rng.normal(0, 6, boxes.shape).astype(np.float32)
        scores = rng.uniform(0.05, 1, 4)
        guesses = np.where(rng.random(4) < 0.8, classes, (classes + 1) % 3)
        truth.append(Detections(boxes, np.ones(4), classes))
        said.append(Detections(noisy, scores, guesses))
        images.append({"id": image_id})
        for box, cls in zip(boxes.astype(np.float64), classes):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for box, cls, score in zip(noisy.astype(np.float64), guesses, scores):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "score": float(score),
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)],
        }
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ours = evaluate_detections(truth, said, CLASSES, iou_threshold=extra)
    assert (ours["map"], ours["map50"], ours["map75"]) == pytest.approx(tuple(evaluator.stats[:3]), abs=1e-12)
