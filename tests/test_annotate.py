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


@pytest.mark.parametrize("image", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), None])
def test_annotate_rejects_non_bgr_images(image) -> None:
    with pytest.raises(FacemaskError, match="BGR uint8 HxWx3"):
        annotate(image, Detections.empty())
