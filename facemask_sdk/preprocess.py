"""Letterbox pre-processing: the one NumPy/OpenCV reference for training, runtime and CUDA kernels.

The image is scaled by one factor `scale = min(H / h, W / w)` (aspect kept), resized with OpenCV's
INTER_LINEAR to `(round(h * scale), round(w * scale))`, placed at the top-left corner of the network
input, converted BGR -> RGB and normalised with the model's mean/std; the padding is 0 after
normalisation. Boxes map between the two frames with the same single `scale`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facemask_sdk.spec import ModelSpec


@dataclass(frozen=True)
class Letterbox:
    """Geometry of one letterboxed image; maps boxes between original and network-input pixels."""

    original_hw: tuple[int, int]
    input_hw: tuple[int, int]
    scale: float

    @classmethod
    def fit(cls, original_hw: tuple[int, int], input_hw: tuple[int, int]) -> Letterbox:
        height, width = original_hw
        if height <= 0 or width <= 0:
            raise ValueError(f"image size must be positive, got {original_hw}")
        scale = min(input_hw[0] / height, input_hw[1] / width)
        return cls(original_hw=(int(height), int(width)), input_hw=tuple(input_hw), scale=float(scale))

    def as_array(self) -> np.ndarray:
        """float32 `[5]` (original h, w, input h, w, scale): the geometry as a tensor, for pipelines
        whose stages run apart (the Triton ensemble passes it from pre- to post-processing)."""
        return np.array([*self.original_hw, *self.input_hw, self.scale], dtype=np.float32)

    @classmethod
    def from_array(cls, values: np.ndarray) -> Letterbox:
        height, width, input_h, input_w, scale = (float(v) for v in np.asarray(values).reshape(5))
        return cls(original_hw=(int(height), int(width)), input_hw=(int(input_h), int(input_w)), scale=scale)

    @property
    def resized_hw(self) -> tuple[int, int]:
        """Size of the image content inside the input, never larger than the input."""
        height = min(self.input_hw[0], max(1, round(self.original_hw[0] * self.scale)))
        width = min(self.input_hw[1], max(1, round(self.original_hw[1] * self.scale)))
        return height, width

    def to_input(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Original-image pixels -> network-input pixels."""
        return np.asarray(boxes_xyxy, dtype=np.float32) * np.float32(self.scale)

    def to_original(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Network-input pixels -> original-image pixels, clipped to the original image."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float32) / np.float32(self.scale)
        height, width = self.original_hw
        return clip_boxes(boxes, height, width)


def clip_boxes(boxes_xyxy: np.ndarray, height: float, width: float) -> np.ndarray:
    """Clip xyxy boxes to `[0, width] x [0, height]`."""
    boxes = np.array(boxes_xyxy, dtype=np.float32, copy=True).reshape(-1, 4)
    np.clip(boxes[:, 0::2], 0.0, width, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0.0, height, out=boxes[:, 1::2])
    return boxes


def normalize_into(
    canvas_chw: np.ndarray, resized_bgr: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]
) -> None:
    """Write `(rgb - mean) / std` of a resized BGR uint8 image into the top-left of a CHW canvas."""
    height, width = resized_bgr.shape[:2]
    for channel in range(3):
        plane = resized_bgr[:, :, 2 - channel].astype(np.float32)
        canvas_chw[channel, :height, :width] = (plane - np.float32(mean[channel])) / np.float32(std[channel])


def letterbox_resize(image_bgr: np.ndarray, letterbox: Letterbox) -> np.ndarray:
    """The INTER_LINEAR resize of the letterbox (uint8 in, uint8 out)."""
    height, width = letterbox.resized_hw
    if (height, width) == tuple(image_bgr.shape[:2]):
        return image_bgr
    return cv2.resize(image_bgr, (width, height), interpolation=cv2.INTER_LINEAR)


def preprocess(image_bgr: np.ndarray, spec: ModelSpec) -> tuple[np.ndarray, Letterbox]:
    """BGR uint8 HxWx3 -> float32 `[3, H, W]` network input and its letterbox geometry."""
    letterbox = Letterbox.fit(image_bgr.shape[:2], spec.image_size)
    canvas = np.zeros((3, *spec.image_size), dtype=np.float32)
    normalize_into(canvas, letterbox_resize(image_bgr, letterbox), spec.mean, spec.std)
    return canvas, letterbox
