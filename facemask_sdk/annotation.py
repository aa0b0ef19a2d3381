"""Drawing detections on images (OpenCV only). Every function returns a new image; inputs are never changed.

>>> annotated = annotate(image_bgr, detections)                   # boxes, labels, scores
>>> annotated = annotate(image_bgr, detections, ground_truth=gt)  # plus dashed white ground truth
>>> annotated = draw_summary(annotated, detections.summary())     # one-line banner on top
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from facemask_sdk.detections import Detections
from facemask_sdk.errors import FacemaskError

CLASS_COLOURS_BGR: dict[str, tuple[int, int, int]] = {
    "with_mask": (0, 200, 0),  # green
    "without_mask": (0, 0, 230),  # red
    "mask_weared_incorrect": (0, 150, 255),  # orange
}
FALLBACK_COLOURS_BGR = ((255, 128, 0), (200, 0, 200), (0, 200, 200), (128, 128, 128))
GROUND_TRUTH_COLOUR_BGR = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
MIN_LABEL_SCALE = 0.3
"""Labels shrink with their box down to this font scale, and no further (still legible)."""


def class_colour(label: str, class_id: int = 0) -> tuple[int, int, int]:
    """BGR colour of a class: fixed for the three dataset classes, a palette entry otherwise."""
    return CLASS_COLOURS_BGR.get(label, FALLBACK_COLOURS_BGR[class_id % len(FALLBACK_COLOURS_BGR)])


def annotate(
    image_bgr: np.ndarray,
    detections: Detections,
    ground_truth: Detections | None = None,
    verdicts: Mapping[int, str] | None = None,
) -> np.ndarray:
    """A copy of the image with each detection's box and `label score`, coloured by class.

    Ground truth, if given, is drawn first as thin dashed white boxes with the label but no score, so
    predictions stay on top and the two are easy to tell apart. Tracked detections (`tracker_id`) read
    `#id class score`; with `verdicts` (tracker id to the person's class so far) the class shown, and the
    colour, are the person's verdict rather than this frame's guess.
    """
    canvas = _copy_image(image_bgr)
    scale = _font_scale(canvas)
    if ground_truth is not None:
        for box, _, _, label in ground_truth:
            corners = _corners(box, canvas)
            _dashed_rectangle(canvas, *corners, GROUND_TRUTH_COLOUR_BGR, thickness=1)
            _label(canvas, f"gt {label}", corners[1], GROUND_TRUTH_COLOUR_BGR, scale, below=True)
    thickness = max(2, round(min(canvas.shape[:2]) / 300))
    tracker_ids = [None] * len(detections) if detections.tracker_id is None else detections.tracker_id.tolist()
    items = []
    for (box, score, class_id, label), tracker_id in zip(detections, tracker_ids):
        text = f"{label} {score:.2f}"
        if tracker_id is not None and tracker_id > 0:
            label = (verdicts or {}).get(tracker_id, label)
            class_id = detections.class_names.index(label) if label in detections.class_names else class_id
            text = f"#{tracker_id} {label} {score:.2f}"
        items.append((score, class_id, label, _corners(box, canvas), text))
    placed = _place_labels(canvas, items, scale)
    order = sorted(range(len(items)), key=lambda i: items[i][0])  # ascending: the best-scored on top
    for i in order:
        score, class_id, label, corners, _ = items[i]
        cv2.rectangle(canvas, corners[0], corners[1], class_colour(label, class_id), thickness)
    for i in order:
        score, class_id, label, _, text = items[i]
        x, top, text_scale = placed[i]
        _draw_label(canvas, text, x, top, class_colour(label, class_id), text_scale)
    return canvas


def _place_labels(image: np.ndarray, items: list, scale: float) -> list[tuple[int, int, float]]:
    """(x, top, font scale) of each label. Labels are sized to their box (small faces in a crowd get
    small labels) and placed best score first above, below or inside the top of their box (or one row
    further out), at the first spot no earlier label covers, so crowded labels stay readable."""
    taken: list[tuple[int, int, int, int]] = []
    placed: list[tuple[int, int, float] | None] = [None] * len(items)
    for i in sorted(range(len(items)), key=lambda i: -items[i][0]):
        score, _, label, ((x1, y1), (x2, y2)), text = items[i]
        (full_w, _), _ = cv2.getTextSize(text, FONT, scale, 1)
        fit = max(x2 - x1, 1) * 1.6 / max(full_w, 1)
        text_scale = float(np.clip(scale * min(1.0, fit), min(MIN_LABEL_SCALE, scale), scale))
        (width, height), baseline = cv2.getTextSize(text, FONT, text_scale, 1)
        box_h = height + baseline + 2
        x = min(max(x1, 0), max(image.shape[1] - width - 2, 0))
        candidates = [y1 - box_h, y2 + 1, y1 + 1, y1 - 2 * box_h, y2 + 1 + box_h]  # nearest first
        spots = [min(max(top, 0), max(image.shape[0] - box_h, 0)) for top in candidates]
        rects = [(x, top, x + width + 2, top + box_h) for top in spots]
        overlaps = [sum(_overlap_area(r, t) for t in taken) for r in rects]
        best = int(np.argmin(overlaps))
        taken.append(rects[best])
        placed[i] = (x, spots[best], text_scale)
    return placed  # type: ignore[return-value]


def _overlap_area(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _draw_label(image: np.ndarray, text: str, x: int, top: int, colour: tuple, scale: float) -> None:
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    cv2.rectangle(image, (x, top), (x + width + 2, top + height + baseline + 2), colour, -1)
    text_colour = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
    cv2.putText(image, text, (x + 1, top + height + 1), FONT, scale, text_colour, 1, cv2.LINE_AA)


def draw_summary(image_bgr: np.ndarray, summary: dict) -> np.ndarray:
    """A copy of the image with a one-line banner: face count, per-class counts and compliance rate."""
    canvas = _copy_image(image_bgr)
    parts = [f"faces: {summary.get('faces', 0)}"]
    parts += [f"{name}: {count}" for name, count in summary.get("per_class", {}).items()]
    rate = summary.get("compliance_rate")
    parts.append("compliance: n/a" if rate is None else f"compliance: {100 * rate:.0f}%")
    text = "  ".join(parts)
    scale = _font_scale(canvas)
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    if width > canvas.shape[1] - 8:  # shrink to the frame's width rather than cut the banner off
        scale *= (canvas.shape[1] - 8) / width
        (width, height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    banner_h = height + baseline + 8
    overlay = canvas.copy()
    cv2.rectangle(overlay, (0, 0), (canvas.shape[1], banner_h), (0, 0, 0), -1)
    cv2.addWeighted(overlay, 0.6, canvas, 0.4, 0, dst=canvas)
    cv2.putText(canvas, text, (4, 4 + height), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def _copy_image(image_bgr: np.ndarray) -> np.ndarray:
    if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8 or image_bgr.ndim != 3:
        is_array = isinstance(image_bgr, np.ndarray)
        found = f"{image_bgr.dtype} {list(image_bgr.shape)}" if is_array else type(image_bgr).__name__
        raise FacemaskError(f"expected a BGR uint8 HxWx3 image, got {found}")
    if image_bgr.shape[2] != 3:
        raise FacemaskError(f"expected a BGR uint8 HxWx3 image, got shape {list(image_bgr.shape)}")
    return np.ascontiguousarray(image_bgr).copy()


def _font_scale(image: np.ndarray) -> float:
    return float(np.clip(min(image.shape[:2]) / 800, 0.35, 1.2))


def _corners(box: np.ndarray, image: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    height, width = image.shape[:2]
    x1, y1, x2, y2 = np.nan_to_num(np.asarray(box, dtype=np.float64), nan=0.0)
    x1, x2 = (int(round(float(np.clip(v, 0, width - 1)))) for v in (x1, x2))
    y1, y2 = (int(round(float(np.clip(v, 0, height - 1)))) for v in (y1, y2))
    return (x1, y1), (x2, y2)


def _label(
    image: np.ndarray, text: str, anchor: tuple[int, int], colour: tuple, scale: float, below: bool = False
) -> None:
    """Text on a filled box in the class colour, above `anchor` (or below it), kept inside the image."""
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    x = min(max(anchor[0], 0), max(image.shape[1] - width - 2, 0))
    if below:
        top = min(anchor[1] + 1, image.shape[0] - height - baseline - 2)
    else:
        top = anchor[1] - height - baseline - 2
        if top < 0:
            top = anchor[1] + 1
    top = max(top, 0)
    cv2.rectangle(image, (x, top), (x + width + 2, top + height + baseline + 2), colour, -1)
    text_colour = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
    cv2.putText(image, text, (x + 1, top + height + 1), FONT, scale, text_colour, 1, cv2.LINE_AA)


def _dashed_rectangle(
    image: np.ndarray,
    p1: tuple[int, int],
    p2: tuple[int, int],
    colour: tuple,
    thickness: int = 1,
    dash: int = 6,
) -> None:
    (x1, y1), (x2, y2) = p1, p2
    edges = ((x1, x2, y1, True), (x1, x2, y2, True), (y1, y2, x1, False), (y1, y2, x2, False))
    for a, b, fixed, horizontal in edges:
        for start in range(a, b + 1, 2 * dash):
            end = min(start + dash, b)
            if horizontal:
                cv2.line(image, (start, fixed), (end, fixed), colour, thickness)
            else:
                cv2.line(image, (fixed, start), (fixed, end), colour, thickness)
