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


def evaluation_config():
    """The post-processing every accuracy figure uses: the product's own NMS, COCO's low threshold."""
    from facemask_sdk.postprocess import PostprocessConfig

    return PostprocessConfig(
        score_threshold=EVAL_SCORE_THRESHOLD, iou_threshold=EVAL_IOU_THRESHOLD, max_detections=EVAL_MAX_DETECTIONS
    )


def evaluate_detections(
    ground_truth: "list[Detections]",
    predictions: "list[Detections]",
    classes: tuple[str, ...],
    max_detections: int = 100,
) -> dict:
    """COCO mAP of `predictions` against `ground_truth` (same image order, same length), both as the
    product's `Detections` (ground truth from `ImageRecord.ground_truth()`; its scores are ignored)."""
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
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                 "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0}
            )
        scores = np.asarray(pred.scores, np.float64)
        for box, cls, score in zip(np.asarray(pred.xyxy, np.float64).reshape(-1, 4), np.asarray(pred.class_ids).reshape(-1), scores):
            results.append(
                {"image_id": image_id, "category_id": int(cls) + 1,
                 "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": float(score)}
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    empty = {name: 0.0 for name in classes}
    if not results:
        return {"map": 0.0, "map50": 0.0, "map75": 0.0, "ap50_per_class": dict(empty), "ap_per_class": dict(empty),
                "images": len(images), "ground_truth_boxes": len(annotations), "detections": 0}

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.maxDets = [1, 10, max_detections]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # precision: [iou thresholds, recall points, classes, area ranges, max dets]; area 'all', largest maxDets
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    ap_per_class, ap50_per_class = {}, {}
    for k, name in enumerate(classes):
        has_gt = any(a["category_id"] == k + 1 for a in annotations)
        ap_per_class[name] = _mean_valid(precision[:, :, k]) if has_gt else None
        ap50_per_class[name] = _mean_valid(precision[0, :, k]) if has_gt else None
    return {
        "map": float(evaluator.stats[0]),
        "map50": float(evaluator.stats[1]),
        "map75": float(evaluator.stats[2]),
        "ap50_per_class": ap50_per_class,
        "ap_per_class": ap_per_class,
        "images": len(images),
        "ground_truth_boxes": len(annotations),
        "detections": len(results),
    }


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else 0.0
