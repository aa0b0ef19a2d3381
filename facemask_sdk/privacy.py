"""Blurring faces before an image is stored: many sites may keep counts but not recognisable faces.

    >>> private = blur_faces(image_bgr, detections, which="all")            # every face
    >>> private = blur_faces(image_bgr, detections, which="unmasked")       # faces not wearing a mask right

Each box is enlarged by `BLUR_MARGIN` on every side (a detector's box can end at the hairline or the
chin) and replaced by a coarse mosaic (`pixelate`, the default: no detail survives, whatever the face's
size) or a strong Gaussian blur (`gaussian`, kernel a third of the face). Only what the detector found is
blurred: a missed face stays as it was, so check the detector's recall on your camera first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import cv2
import numpy as np

from facemask_sdk.detections import COMPLIANT_CLASS, Detections
from facemask_sdk.errors import FacemaskError

BLUR_CHOICES = ("none", "all", "unmasked")
BLUR_METHODS = ("pixelate", "gaussian")
BLUR_MARGIN = 0.15
"""Share of the box's width and height added on each side before blurring."""
PIXELATE_CELLS = 6
"""A pixelated face is at most this many cells across: too few for anyone to be recognised."""


def faces_to_blur(detections: Detections, which: str, verdicts: Mapping[int, str] | None = None) -> np.ndarray:
    """Boolean mask of the detections `which` selects. With `verdicts` (tracker id to a person's class),
    "unmasked" also blurs a face whose person is unmasked even where this frame's box says otherwise."""
    if which not in BLUR_CHOICES:
        raise FacemaskError(f"blur must be one of {', '.join(BLUR_CHOICES)}, got {which!r}")
    if which == "none":
        return np.zeros(len(detections), bool)
    if which == "all":
        return np.ones(len(detections), bool)
    unmasked = np.array([label != COMPLIANT_CLASS for label in detections.labels], bool)
    if verdicts and detections.tracker_id is not None:
        unmasked |= np.array(
            [verdicts.get(i, COMPLIANT_CLASS) != COMPLIANT_CLASS for i in detections.tracker_id.tolist()], bool
        )
    return unmasked


def blur_faces(
    image_bgr: np.ndarray,
    detections: Detections,
    which: str = "all",
    method: Literal["pixelate", "gaussian"] = "pixelate",
    verdicts: Mapping[int, str] | None = None,
) -> np.ndarray:
    """A copy of the image with the selected faces (see `faces_to_blur`) made unrecognisable."""
    if method not in BLUR_METHODS:
        raise FacemaskError(f"blur method must be one of {', '.join(BLUR_METHODS)}, got {method!r}")
    if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8 or image_bgr.ndim != 3:
        raise FacemaskError("blur_faces expects a BGR uint8 HxWx3 image")
    canvas = image_bgr.copy()
    height, width = canvas.shape[:2]
    for x1, y1, x2, y2 in detections.xyxy[faces_to_blur(detections, which, verdicts)].astype(np.float64):
        grow_x, grow_y = (x2 - x1) * BLUR_MARGIN, (y2 - y1) * BLUR_MARGIN
        left, top = int(np.clip(np.floor(x1 - grow_x), 0, width)), int(np.clip(np.floor(y1 - grow_y), 0, height))
        right, bottom = int(np.clip(np.ceil(x2 + grow_x), 0, width)), int(np.clip(np.ceil(y2 + grow_y), 0, height))
        if right - left < 1 or bottom - top < 1:
            continue
        region = canvas[top:bottom, left:right]
        canvas[top:bottom, left:right] = _pixelate(region) if method == "pixelate" else _gaussian(region)
    return canvas


def _pixelate(region: np.ndarray) -> np.ndarray:
    """Cells of the mean colour, at most `PIXELATE_CELLS` across the longer side."""
    h, w = region.shape[:2]
    cells = max(1, round(max(h, w) / PIXELATE_CELLS))
    small = cv2.resize(region, (max(1, round(w / cells)), max(1, round(h / cells))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def _gaussian(region: np.ndarray) -> np.ndarray:
    h, w = region.shape[:2]
    kernel = max(3, (max(h, w) // 3) | 1)
    return cv2.GaussianBlur(region, (kernel, kernel), sigmaX=0)
