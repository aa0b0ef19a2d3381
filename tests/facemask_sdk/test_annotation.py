"""Drawing: copies not mutations, class colours, ground truth drawn, summary banner, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from facemask_sdk.annotation import CLASS_COLOURS_BGR, annotate, draw_summary
from facemask_sdk.detections import Detections
from facemask_sdk.errors import FacemaskError


def test_annotate_returns_a_copy_with_class_coloured_boxes() -> None:
    image = np.full((200, 300, 3), 40, dtype=np.uint8)
    original = image.copy()
    dets = Detections([[50, 60, 150, 180], [200, 20, 280, 100]], [0.9, 0.7], [0, 1])

    out = annotate(image, dets)

    np.testing.assert_array_equal(image, original)
    assert out.shape == image.shape and out.dtype == np.uint8 and out is not image
    assert tuple(out[120, 50]) == CLASS_COLOURS_BGR["with_mask"]  # left edge of the first box
    assert tuple(out[60, 280]) == CLASS_COLOURS_BGR["without_mask"]  # right edge of the second


def test_ground_truth_is_drawn_dashed_white() -> None:
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    truth = Detections([[20, 40, 200, 190]], [1.0], [2])
    out = annotate(image, Detections.empty(), ground_truth=truth)
    bottom_edge = out[190, 20:200]
    white = np.all(bottom_edge == 255, axis=1)
    assert 0.3 < white.mean() < 0.8  # dashed: some on, some off


def test_draw_summary_banner() -> None:
    image = np.zeros((120, 400, 3), dtype=np.uint8)
    out = draw_summary(image, Detections([[0, 0, 5, 5]], [0.9], [0]).summary())
    assert out[:10].any() and not out[60:].any() and not image.any()


def test_higher_scores_are_drawn_on_top() -> None:
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    box = [50, 60, 150, 180]
    for scores in ([0.9, 0.5], [0.5, 0.9]):  # the same box, two classes, in both orders
        out = annotate(image, Detections([box, box], scores, [0, 1]))
        winner = "with_mask" if scores[0] > scores[1] else "without_mask"
        assert tuple(out[120, 50]) == CLASS_COLOURS_BGR[winner]


def test_crowded_labels_do_not_cover_each_other() -> None:
    """A row of small adjacent faces: every label is placed where no other label lies."""
    from facemask_sdk.annotation import _corners, _font_scale, _overlap_area, _place_labels

    image = np.zeros((400, 640, 3), dtype=np.uint8)
    boxes = [[20 + 30 * i, 200, 46 + 30 * i, 228] for i in range(12)]
    dets = Detections(boxes, np.linspace(0.9, 0.5, 12), [i % 3 for i in range(12)])
    items = [(s, c, label, _corners(b, image), f"{label} {s:.2f}") for b, s, c, label in dets]
    placed = _place_labels(image, items, _font_scale(image))
    import cv2

    rects = []
    for (_, _, _, _, text), (x, top, scale) in zip(items, placed):
        (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        rects.append((x, top, x + w + 2, top + h + base + 2))
    overlapping = sum(_overlap_area(a, b) > 0 for i, a in enumerate(rects) for b in rects[i + 1 :])
    assert overlapping == 0, f"{overlapping} label pairs overlap"
    assert annotate(image, dets).any()


def test_summary_banner_fits_a_narrow_frame() -> None:
    image = np.zeros((360, 640, 3), dtype=np.uint8)
    summary = {
        "faces": 10,
        "per_class": {"with_mask": 5, "without_mask": 3, "mask_weared_incorrect": 2},
        "compliance_rate": 0.5,
    }
    out = draw_summary(image, summary)
    lit_columns = np.flatnonzero((out[:40] > 200).any(axis=(0, 2)))
    assert lit_columns.max() < 640 - 2


@pytest.mark.parametrize("image", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), None])
def test_annotate_rejects_non_bgr_images(image) -> None:
    with pytest.raises(FacemaskError, match="BGR uint8 HxWx3"):
        annotate(image, Detections.empty())
