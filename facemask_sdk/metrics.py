"""COCO-style detection metrics via pycocotools: the one metric code of training, eval and benchmarks.

Boxes are xyxy pixels on the original images. `evaluate_detections` returns mAP@[.5:.95], mAP@.5 and
per-class AP (both IoU settings); pycocotools is imported lazily (extra `[eval]`).
"""

from __future__ import annotations

import contextlib
import io
from typing import TYPE_CHECKING

import numpy as np

from facemask_sdk.errors import FacemaskError

if TYPE_CHECKING:
    from facemask_sdk.detections import Detections


EVAL_SCORE_THRESHOLD = 0.001
"""Detections below this score are dropped before the metric (COCO practice)."""
EVAL_IOU_THRESHOLD = 0.5
EVAL_MAX_DETECTIONS = 100
"""At most this many detections per image reach the metric (COCO's maxDets)."""

FACE_SIZE_BUCKETS: tuple[tuple[float, float], ...] = (
    (0.0, 0.06),
    (0.06, 0.12),
    (0.12, 0.25),
    (0.25, 0.5),
    (0.5, float("inf")),
)
"""Face size = sqrt(box area) / the image's long side. Kaggle faces sit almost all in the first three;
close-ups (a face filling a webcam frame) in the last two, where the model was measured to fail."""
FOUND_SCORE_THRESHOLD = 0.3
"""A face counts as found when a prediction of at least this score overlaps it (size breakdown)."""


def bucket_name(bucket: tuple[float, float]) -> str:
    low, high = bucket
    return f"<{high:g}" if low == 0 else (f">{low:g}" if high == float("inf") else f"{low:g}-{high:g}")


def face_sizes(boxes_xyxy: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """sqrt(area) / long side of the image for each box: the size the breakdown buckets by."""
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    return np.sqrt(area) / float(max(image_hw))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of xyxy boxes: rows of the post-processing's own IoU (empty boxes: 0)."""
    from facemask_sdk.postprocess import box_iou_one_to_many

    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.float32)
    return np.nan_to_num(np.stack([box_iou_one_to_many(box, b) for box in a]), nan=0.0)


def size_breakdown(
    ground_truth: list[Detections],
    predictions: list[Detections],
    image_sizes: list[tuple[int, int]],
    classes: tuple[str, ...],
    iou_threshold: float = EVAL_IOU_THRESHOLD,
    score_threshold: float = FOUND_SCORE_THRESHOLD,
) -> dict:
    """Per face-size bucket: the share of labelled faces that get a prediction (score >= `score_threshold`,
    IoU >= `iou_threshold`), the share whose best such prediction (highest IoU) has the right class, both
    over all labelled faces of the bucket (the protocol of ../shared/datasets/other-cameras/README.md), and
    the class confusion (rows: labelled class, columns: the class of that best prediction, or `missed`).

    mAP hides the failure a user sees (an unmasked face in a close-up called masked); this shows it.
    Also counts confident predictions that lie on no labelled face (`unmatched_predictions`).
    """
    columns = [*classes, "missed"]
    buckets = {
        bucket_name(b): {
            "faces": 0,
            "found": 0,
            "right_class": 0,
            "confusion": {c: dict.fromkeys(columns, 0) for c in classes},
        }
        for b in FACE_SIZE_BUCKETS
    }
    confident, unmatched = 0, 0
    for gt, pred, hw in zip(ground_truth, predictions, image_sizes):
        keep = np.asarray(pred.scores) >= score_threshold
        pred_boxes, pred_classes = np.asarray(pred.xyxy)[keep], np.asarray(pred.class_ids)[keep]
        ious = box_iou(gt.xyxy, pred_boxes)
        overlaps = ious >= iou_threshold
        confident += len(pred_boxes)
        unmatched += int((~overlaps.any(0)).sum()) if len(pred_boxes) else 0
        for face, (size, truth) in enumerate(zip(face_sizes(gt.xyxy, hw), np.asarray(gt.class_ids))):
            row = buckets[bucket_name(next(b for b in FACE_SIZE_BUCKETS if b[0] <= size < b[1]))]
            row["faces"] += 1
            hits = np.flatnonzero(overlaps[face]) if len(pred_boxes) else np.zeros(0, int)
            if not len(hits):
                row["confusion"][classes[truth]]["missed"] += 1
                continue
            said = int(pred_classes[hits[np.argmax(ious[face, hits])]])
            row["found"] += 1
            row["right_class"] += int(said == truth)
            row["confusion"][classes[truth]][classes[said]] += 1
    for row in buckets.values():
        row["found_share"] = row["found"] / row["faces"] if row["faces"] else None
        row["right_class_share"] = row["right_class"] / row["faces"] if row["faces"] else None
    return {
        "iou_threshold": iou_threshold,
        "score_threshold": score_threshold,
        "buckets": buckets,
        "confident_predictions": confident,
        "unmatched_predictions": unmatched,
    }


def evaluation_config():
    """The post-processing every accuracy figure uses: the product's own NMS, COCO's low threshold."""
    from facemask_sdk.postprocess import PostprocessConfig

    return PostprocessConfig(
        score_threshold=EVAL_SCORE_THRESHOLD, iou_threshold=EVAL_IOU_THRESHOLD, max_detections=EVAL_MAX_DETECTIONS
    )


def evaluate_detections(
    ground_truth: list[Detections],
    predictions: list[Detections],
    classes: tuple[str, ...],
    max_detections: int = 100,
    iou_threshold: float | None = None,
) -> dict:
    """COCO mAP of `predictions` against `ground_truth` (same image order, same length), both as the
    product's `Detections` (ground truth from `ImageRecord.ground_truth()`; its scores are ignored).

    `iou_threshold` adds AP at that one IoU (`ap_at_iou`, `ap_at_iou_per_class`; COCO's 101 recall
    points): for sets drawn with another box convention, such as head boxes against our face boxes."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise FacemaskError("metrics need pycocotools: pip install 'facemask-sdk[eval]'") from None
    if len(ground_truth) != len(predictions):
        raise FacemaskError(f"{len(ground_truth)} ground-truth images but {len(predictions)} predictions")

    images, annotations, results = [], [], []
    for image_id, (gt, pred) in enumerate(zip(ground_truth, predictions), start=1):
        images.append({"id": image_id})
        for box, cls in zip(np.asarray(gt.xyxy, np.float64).reshape(-1, 4), np.asarray(gt.class_ids).reshape(-1)):
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
        scores = np.asarray(pred.scores, np.float64)
        for box, cls, score in zip(
            np.asarray(pred.xyxy, np.float64).reshape(-1, 4), np.asarray(pred.class_ids).reshape(-1), scores
        ):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "score": float(score),
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    empty = {name: 0.0 for name in classes}
    if not results:
        report = {
            "map": 0.0,
            "map50": 0.0,
            "map75": 0.0,
            "ap50_per_class": dict(empty),
            "ap_per_class": dict(empty),
            "images": len(images),
            "ground_truth_boxes": len(annotations),
            "detections": 0,
        }
        if iou_threshold is not None:
            report.update(iou_threshold=iou_threshold, ap_at_iou=0.0, ap_at_iou_per_class=dict(empty))
        return report

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.maxDets = [1, 10, max_detections]
        coco_thresholds = np.array(evaluator.params.iouThrs)
        if iou_threshold is not None and iou_threshold not in coco_thresholds:
            evaluator.params.iouThrs = np.sort(np.append(coco_thresholds, iou_threshold))
        evaluator.evaluate()
        evaluator.accumulate()  # the figures below read its precision array; COCO's printed summary is not needed
    # precision: [iou thresholds, recall points, classes, area ranges, max dets]; area 'all', largest maxDets
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    thresholds = np.asarray(evaluator.params.iouThrs)
    coco = np.flatnonzero(np.isin(thresholds, coco_thresholds))  # COCO's ten, exactly as its summary takes them
    at = {t: int(np.flatnonzero(thresholds == t)[0]) for t in (0.5, 0.75)}
    present = [any(a["category_id"] == k + 1 for a in annotations) for k in range(len(classes))]
    ap_per_class = {name: _mean_valid(precision[coco, :, k]) if present[k] else None for k, name in enumerate(classes)}
    ap50_per_class = {
        name: _mean_valid(precision[at[0.5], :, k]) if present[k] else None for k, name in enumerate(classes)
    }
    report = {
        "map": _mean_valid(precision[coco]),
        "map50": _mean_valid(precision[at[0.5]]),
        "map75": _mean_valid(precision[at[0.75]]),
        "ap50_per_class": ap50_per_class,
        "ap_per_class": ap_per_class,
        "images": len(images),
        "ground_truth_boxes": len(annotations),
        "detections": len(results),
    }
    if iou_threshold is not None:
        index = int(np.flatnonzero(thresholds == iou_threshold)[0])
        report["iou_threshold"] = iou_threshold
        report["ap_at_iou"] = _mean_valid(precision[index])
        report["ap_at_iou_per_class"] = {
            name: _mean_valid(precision[index, :, k]) if present[k] else None for k, name in enumerate(classes)
        }
    return report


def _mean_valid(values: np.ndarray) -> float:
    """Mean precision over the entries COCO fills (-1 marks none); 0.0 where there are none (COCO says -1)."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else 0.0
