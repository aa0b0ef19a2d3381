"""The close-up check: a face that fills much of the frame is classified again on the image shrunk.

Why: the training photos hold few close-ups (90% of their faces are under 15.5% of the image's long side), so the
model finds a close-up but gives it the wrong class far more often than a face of the size it was trained on (an
unmasked face filling a door camera's frame called `with_mask`). Shrinking the image 3x brings a face above 0.3 of
the frame back to the sizes the model knows, sharp rather than enlarged.

Only a confident detection (score >= `min_score`, the product's default threshold) above `min_face_size` is checked,
and only frames with one pay the second pass. It takes the class of the second pass's best-overlapping box (IoU >=
`match_iou`) and keeps its own box and score (found at full resolution); without such a box it keeps its class. Only
second-pass boxes of score >= `min_score` vote, so the check gives the same classes whatever threshold the caller's
post-processing keeps below it (the evaluation keeps 0.001, the product 0.4); a `Detector` with a score threshold
above `min_score` loses the votes in between. The settings were chosen on training data only (docs/training-log.md,
stages AA and AB): 3x of 2x, 3x, 4x; 0.3 of 0.25-0.5 (it costs nothing on the training split; 0.25 ties with it
on its close-ups); faint boxes neither checked nor voting (their flips only cost: duplicates of a face's class, right
classes lost). On the training split's close-ups: right class above half the frame 493 -> 537 of 586 faces.

    results = check_closeups(results, [frame.shape[:2] for frame in frames], detect_shrunk)

`detect_shrunk(indices)` runs the same detector over `shrink_frames` of those frames: the `Detector` through its own
pipeline, the Triton ensemble through its network model, the evaluation through the PyTorch network, one logic for
all."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from facemask_sdk.detections import Detections
from facemask_sdk.errors import FacemaskError
from facemask_sdk.metrics import box_iou, face_sizes
from facemask_sdk.postprocess import PostprocessConfig
from facemask_sdk.preprocess import clip_boxes
from facemask_sdk.validation import positive, unit_interval


@dataclass(frozen=True)
class CloseupCheck:
    """Settings of the close-up check (the defaults are the measured choice).

    `min_face_size`: sqrt(area) / the image's long side above which a face is checked (the evaluation's
    0.25-0.5 and > 0.5 buckets); `shrink`: how many times smaller the second pass sees the image;
    `match_iou`: the overlap (> 0) a second-pass box needs to give its class; `min_score`: the score a large
    detection needs to be checked, and a second-pass box to give its class.
    """

    min_face_size: float = 0.3
    shrink: float = 3.0
    match_iou: float = 0.5
    min_score: float = PostprocessConfig.score_threshold

    def __post_init__(self) -> None:
        for name in ("min_face_size", "match_iou", "min_score"):
            unit_interval(name, getattr(self, name))
        if self.match_iou == 0:
            raise FacemaskError("match_iou must be above 0: a box that does not overlap a face cannot give its class")
        if positive("shrink", self.shrink) <= 1:
            raise FacemaskError(f"shrink must be a number above 1, got {self.shrink!r}")


DEFAULT_CLOSEUP_CHECK = CloseupCheck()
"""What the `Detector`, `detect` and `eval` run by default."""


def describe(check: CloseupCheck | None) -> str:
    """The check in words, for help texts and the records that say how a figure was measured."""
    if check is None:
        return "no close-up check"
    return (
        f"close-up check: a face of score >= {check.min_score:g} above {check.min_face_size:g} of the frame's long "
        f"side takes the class of a second pass on the image shrunk {check.shrink:g}x (match IoU >= {check.match_iou:g})"
    )


def checked_indices(detections: Detections, image_hw: tuple[int, int], check: CloseupCheck) -> np.ndarray:
    """The detections the check re-classifies: score >= `min_score` and larger than `min_face_size`."""
    large = face_sizes(detections.xyxy, image_hw) > check.min_face_size
    return np.flatnonzero(large & (detections.scores >= check.min_score))


def shrunk_size(image_hw: tuple[int, int], check: CloseupCheck) -> tuple[int, int]:
    """(height, width) of the frame's content in the shrunk canvas: whole pixels, at least one."""
    height, width = image_hw
    return max(1, round(height / check.shrink)), max(1, round(width / check.shrink))


def shrink_frame(image_bgr: np.ndarray, check: CloseupCheck, fill_bgr: Sequence[int]) -> np.ndarray:
    """The frame shrunk `check.shrink` times (area interpolation: sharp, no aliasing) at the top-left of a
    canvas of its own size filled with `fill_bgr` (the model's mean colour, what the letterbox pads with),
    so the second pass's boxes come back in the frame's pixels divided by the shrink of each axis."""
    import cv2  # here, so that the command lines' help reads this module without OpenCV

    small_h, small_w = shrunk_size(image_bgr.shape[:2], check)
    canvas = np.empty_like(image_bgr)
    canvas[:] = np.asarray(fill_bgr, np.uint8)
    canvas[:small_h, :small_w] = cv2.resize(image_bgr, (small_w, small_h), interpolation=cv2.INTER_AREA)
    return canvas


def shrink_frames(frames: Sequence[np.ndarray], check: CloseupCheck, mean_rgb: Sequence[float]) -> list[np.ndarray]:
    """`shrink_frame` of each frame on the model's mean colour (`fill_colour(mean_rgb)`): what a second pass
    runs on, in the `Detector` and in the Triton ensemble alike."""
    fill = fill_colour(mean_rgb)
    return [shrink_frame(frame, check, fill) for frame in frames]


def take_closeup_classes(
    first: Detections, shrunk: Detections, image_hw: tuple[int, int], check: CloseupCheck
) -> Detections:
    """`first` with the classes of its `checked_indices` taken from `shrunk` (the second pass, in the
    shrunk canvas's pixels) where a box of score >= `min_score` overlaps them by `match_iou`; boxes, scores
    and track ids are `first`'s."""
    large = checked_indices(first, image_hw, check)
    voters = shrunk[shrunk.scores >= check.min_score]
    if not len(large) or not len(voters):
        return first
    height, width = image_hw
    small_h, small_w = shrunk_size(image_hw, check)
    to_frame = np.array([width / small_w, height / small_h] * 2, np.float32)
    overlaps = box_iou(first.xyxy[large], clip_boxes(voters.xyxy * to_frame, height, width))
    best = overlaps.argmax(axis=1)
    matched = overlaps[np.arange(len(large)), best] >= check.match_iou
    class_ids = first.class_ids.copy()
    class_ids[large[matched]] = voters.class_ids[best[matched]]
    return Detections(first.xyxy, first.scores, class_ids, first.class_names, first.tracker_id)


def check_closeups(
    results: list[Detections],
    image_sizes: Sequence[tuple[int, int]],
    detect_shrunk: Callable[[list[int]], list[Detections]],
    check: CloseupCheck,
) -> list[Detections]:
    """`results` with the close-up check applied: `detect_shrunk(indices)` returns the detections of the
    shrunk frames (`shrink_frame`) at those indices, in order; it is called once, and not at all when no
    frame needs it."""
    indices = [i for i, (found, hw) in enumerate(zip(results, image_sizes)) if len(checked_indices(found, hw, check))]
    if not indices:
        return results
    checked = list(results)
    for index, shrunk in zip(indices, detect_shrunk(indices), strict=True):
        checked[index] = take_closeup_classes(results[index], shrunk, image_sizes[index], check)
    return checked


def fill_colour(mean_rgb: Sequence[float]) -> tuple[int, int, int]:
    """The model's mean colour (RGB, 0..255) as BGR uint8: the colour the letterbox's zero padding is."""
    red, green, blue = (int(round(float(v))) for v in mean_rgb)
    return blue, green, red
