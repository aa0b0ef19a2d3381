"""Post-processing reference in NumPy: head outputs of one image -> boxes, scores, class ids.

This module is the specification the CUDA kernels are tested against. With `score_threshold=0` and
`class_agnostic=False` it reproduces effdet's `DetBenchPredict` (`effdet.bench._post_process` + `effdet.anchors.generate_detections`):

1. candidates: every (anchor, class) pair of the flattened `[A * C]` logits whose float32 logit is
   `> logit(score_threshold)` (so one anchor can yield several classes); threshold 0 keeps all;
2. top-k: the `top_k` candidates with the largest logits (ties: lower flat index `a * C + c` first);
3. scores: `sigmoid(logit)` in float32;
4. boxes: effdet's box decoding of the `(ty, tx, th, tw)` codes against the anchors (xyxy, input pixels),
   mapped to original-image pixels with `Letterbox.to_original` (divide by the scale, clip to the image;
   effdet clips before NMS too);
5. non-finite scores, boxes whose decoded (unclipped) coordinates are not all finite, and empty boxes
   (zero width or height after clipping) are dropped;
6. greedy NMS at `iou_threshold`, highest score first: class-agnostic by default (one box per face,
   carrying its best-scored class), or class-aware (torchvision's `batched_nms`, effdet's rule) with
   `class_agnostic=False`;
7. the first `max_detections` survivors, in descending score order.

Thresholding on logits is the same as `sigmoid(logit) > score_threshold` up to float rounding right at the
threshold, and it is exactly the same as thresholding effdet's output afterwards: neither top-k nor NMS
lets a lower-scored candidate change which higher-scored ones survive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facemask_sdk.detections import Detections
from facemask_sdk.errors import FacemaskError
from facemask_sdk.preprocess import Letterbox
from facemask_sdk.validation import true_or_false, unit_interval, whole_number


@dataclass(frozen=True)
class PostprocessConfig:
    """Detection settings: score and NMS IoU thresholds in [0, 1], output and top-k counts > 0.

    `class_agnostic` (default): a box suppresses overlapping boxes of every class, so each face is
    counted once, with its best class; False is effdet's class-aware NMS.
    """

    score_threshold: float = 0.4
    iou_threshold: float = 0.5
    max_detections: int = 100
    top_k: int = 5000
    class_agnostic: bool = True

    def __post_init__(self) -> None:
        for name in ("score_threshold", "iou_threshold"):
            unit_interval(name, getattr(self, name))
        for name in ("max_detections", "top_k"):
            whole_number(name, getattr(self, name))
        true_or_false("class_agnostic", self.class_agnostic)

    @property
    def logit_threshold(self) -> np.float32:
        """The score threshold as a float32 logit: candidates need `logit > logit_threshold`."""
        t = float(self.score_threshold)
        if t <= 0.0:
            return np.float32(-np.inf)
        if t >= 1.0:
            return np.float32(np.inf)
        return np.float32(math.log(t / (1.0 - t)))


def decode_boxes(box_codes: np.ndarray, anchors_xyxy: np.ndarray) -> np.ndarray:
    """effdet's box decoding (`decode_box_outputs`): `(ty, tx, th, tw)` codes + xyxy anchors -> xyxy.

    `w = exp(tw) * wa`, `h = exp(th) * ha`, centre `(tx * wa + xa, ty * ha + ya)`; float32 throughout.
    """
    codes = np.asarray(box_codes, dtype=np.float32)
    anchors = np.asarray(anchors_xyxy, dtype=np.float32)
    _check_shape("box_codes", codes, (None, 4))
    _check_shape("anchors_xyxy", anchors, (codes.shape[0], 4))
    two = np.float32(2.0)
    ycenter_a = (anchors[:, 1] + anchors[:, 3]) / two
    xcenter_a = (anchors[:, 0] + anchors[:, 2]) / two
    ha = anchors[:, 3] - anchors[:, 1]
    wa = anchors[:, 2] - anchors[:, 0]
    ty, tx, th, tw = codes[:, 0], codes[:, 1], codes[:, 2], codes[:, 3]
    with np.errstate(over="ignore", invalid="ignore"):  # huge codes give inf like torch; clipping bounds them
        w = np.exp(tw) * wa
        h = np.exp(th) * ha
    ycenter = ty * ha + ycenter_a
    xcenter = tx * wa + xcenter_a
    return np.stack([xcenter - w / two, ycenter - h / two, xcenter + w / two, ycenter + h / two], axis=1)


def box_iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with many, float32, area `(x2 - x1) * (y2 - y1)` (torchvision's NMS maths).

    Two empty boxes give NaN, which never counts as an overlap.
    """
    xx1 = np.maximum(box[0], boxes[:, 0])
    yy1 = np.maximum(box[1], boxes[:, 1])
    xx2 = np.minimum(box[2], boxes[:, 2])
    yy2 = np.minimum(box[3], boxes[:, 3])
    zero = np.float32(0.0)
    inter = np.maximum(zero, xx2 - xx1) * np.maximum(zero, yy2 - yy1)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area + areas - inter)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS like `torchvision.ops.nms`: indices of the kept boxes, highest score first.

    A box is dropped when its IoU with an already kept, higher-ranked box is `> iou_threshold`.
    Ranking is by score, descending; equal scores rank the lower index first.
    """
    return batched_nms(boxes, scores, np.zeros(len(scores), dtype=np.int64), iou_threshold)


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    max_keep: int | None = None,
) -> np.ndarray:
    """Class-aware NMS like `torchvision.ops.batched_nms`: boxes only suppress boxes of their own class.

    Returns int64 indices of the kept boxes in descending score order (ties: lower index first). With
    `max_keep` it stops after that many: the same as slicing the full result, only faster.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    class_ids = np.asarray(class_ids)
    _check_shape("boxes", boxes, (None, 4))
    _check_shape("scores", scores, (boxes.shape[0],))
    _check_shape("class_ids", class_ids, (boxes.shape[0],))
    threshold = np.float32(iou_threshold)

    order = _rank(scores)
    keep = []
    while order.size and (max_keep is None or len(keep) < max_keep):
        best, rest = order[0], order[1:]
        keep.append(best)
        overlap = box_iou_one_to_many(boxes[best], boxes[rest]) > threshold
        order = rest[~(overlap & (class_ids[rest] == class_ids[best]))]
    return np.asarray(keep, dtype=np.int64)


def top_k_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` largest values, largest first; equal values keep the lower index first."""
    values = np.asarray(values).reshape(-1)
    n = values.size
    if k >= n:
        return _rank(values)
    kth = np.partition(values, n - k)[n - k]  # the k-th largest value
    greater = np.flatnonzero(values > kth)
    equal = np.flatnonzero(values == kth)[: k - greater.size]
    chosen = np.sort(np.concatenate([greater, equal]))
    return chosen[_rank(values[chosen])]


def postprocess(
    logits: np.ndarray,
    box_codes: np.ndarray,
    anchors_xyxy: np.ndarray,
    letterbox: Letterbox,
    config: PostprocessConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw head outputs of one image -> (boxes, scores, class_ids), best first (see the module docs).

    `logits` `[A, C]` pre-sigmoid, `box_codes` `[A, 4]` effdet codes, `anchors_xyxy` `[A, 4]` from
    `generate_anchors`. Returns float32 `[N, 4]` xyxy boxes in original-image pixels, float32 `[N]`
    sigmoid scores and int64 `[N]` class ids (0-based, unlike effdet's 1-based output).
    """
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 2:
        raise FacemaskError(f"logits must be [A, C] for one image, got shape {logits.shape}")
    num_anchors, num_classes = logits.shape
    box_codes = np.asarray(box_codes, dtype=np.float32)
    anchors_xyxy = np.asarray(anchors_xyxy, dtype=np.float32)
    _check_shape("box_codes", box_codes, (num_anchors, 4))
    _check_shape("anchors_xyxy", anchors_xyxy, (num_anchors, 4))

    flat = logits.reshape(-1)
    threshold = config.logit_threshold
    # NaN logits are never candidates (NaN > -inf is False; the CUDA kernels agree)
    passing = np.flatnonzero(~np.isnan(flat) if np.isneginf(threshold) else flat > threshold)
    candidates = passing[top_k_indices(flat[passing], config.top_k)]

    anchor_ids = candidates // num_classes
    class_ids = (candidates % num_classes).astype(np.int64)
    scores = _sigmoid(flat[candidates])
    decoded = decode_boxes(box_codes[anchor_ids], anchors_xyxy[anchor_ids])
    boxes = letterbox.to_original(decoded)
    boxes[~np.isfinite(decoded).all(axis=1)] = np.nan  # clipping would turn inf into a plausible box
    valid = valid_detections(boxes, scores)
    boxes, scores, class_ids = boxes[valid], scores[valid], class_ids[valid]

    groups = np.zeros_like(class_ids) if config.class_agnostic else class_ids
    keep = batched_nms(boxes, scores, groups, config.iou_threshold, max_keep=config.max_detections)
    return boxes[keep], scores[keep], class_ids[keep]


def postprocess_detections(
    logits: np.ndarray,
    box_codes: np.ndarray,
    anchors_xyxy: np.ndarray,
    letterbox: Letterbox,
    config: PostprocessConfig,
    class_names: tuple[str, ...],
) -> Detections:
    """`postprocess` as the SDK's value type: what every host-side path returns for one image."""
    return Detections(*postprocess(logits, box_codes, anchors_xyxy, letterbox, config), class_names)


def valid_detections(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Mask of detections with a finite score and a finite, non-empty box (NaN/inf outputs never
    become faces, and a box clipped to nothing at the image border is no face either)."""
    with np.errstate(invalid="ignore"):
        return (
            np.isfinite(scores)
            & np.isfinite(boxes).all(axis=1)
            & (boxes[:, 2] > boxes[:, 0])
            & (boxes[:, 3] > boxes[:, 1])
        )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """float32 logistic function `1 / (1 + exp(-x))`, no overflow warnings for very negative x."""
    with np.errstate(over="ignore"):
        return (np.float32(1.0) / (np.float32(1.0) + np.exp(-x.astype(np.float32)))).astype(np.float32)


def _rank(values: np.ndarray) -> np.ndarray:
    """Indices sorting `values` descending, stable (equal values keep ascending index order)."""
    return np.argsort(-values, kind="stable").astype(np.int64)


def _check_shape(name: str, array: np.ndarray, expected: tuple[int | None, ...]) -> None:
    ok = array.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, array.shape))
    if not ok:
        shown = "[" + ", ".join("N" if e is None else str(e) for e in expected) + "]"
        raise FacemaskError(f"{name} must have shape {shown}, got {list(array.shape)}")
