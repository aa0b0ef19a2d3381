"""Training augmentation on BGR uint8 images and xyxy pixel boxes, seeded per sample.

Scale jitter around the letterbox scale with a random placement (crop or pad), horizontal flip, and a
mild HSV jitter; `zoom_on_face` rescales the image around one chosen face so that face sizes from a few
pixels to nearly the whole crop are all seen, balanced over the evaluation's face-size buckets; with
`canvas_scales` (multi-scale training) each sample (each mosaic quadrant) gets the face scale of one of several
input sizes. The
output goes through the same `normalize_into` as inference, so train and run time see identical
normalisation; evaluation uses `facemask_sdk.preprocess.preprocess` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facemask_sdk.metrics import FACE_SIZE_BUCKETS
from facemask_sdk.preprocess import Letterbox, normalize_into
from facemask_sdk.spec import ModelSpec
from facemask_tools.training.config import TrainConfig

MIN_KEPT_AREA = 0.4
"""A box cut by the crop is kept only if this share of its area stays inside the image."""
MIN_KEPT_SIZE = 2.0
ZOOM_SMALLEST_FACE = 8.0
"""Zoom never shrinks a face below this many canvas pixels (about the smallest face anchors can match)."""
ZOOM_MAX_UPSCALE = TrainConfig.zoom_max_upscale
"""Zoom enlarges a face at most this much over its photo's pixels (the default of `--zoom-max-upscale`). Kaggle
photos are about 400 px wide, so a close-up made from them is an enlargement: 4x (stage L) kept the largest
training faces sharp but left the model unused to the blur of enlarged faces; 8x from stage M on."""
ZOOM_LARGEST_SHARE = 0.95
"""Zoom never grows a face beyond this share of the crop's shorter side: the whole face stays visible."""


@dataclass(frozen=True)
class AugmentConfig:
    scale_min: float = 0.6
    scale_max: float = 1.4
    hflip: float = 0.5
    hsv: float = 0.3  # strength of hue/saturation/value jitter, 0 disables
    random_place: bool = True  # place a smaller image anywhere on the canvas, not only top-left
    photometric: float = 0.0  # chance of one camera degradation per sample: blur, JPEG artefacts or sensor noise
    zoom_class_weights: tuple[float, ...] | None = None  # zoom picks its face weighted by class (None: uniform)
    zoom_max_upscale: float = ZOOM_MAX_UPSCALE  # zoom enlarges a face at most this much over its photo's pixels
    canvas_scales: tuple[float, ...] = ()  # multi-scale: each sample's canvas is image_size x one of these, drawn

    @classmethod
    def strength(cls, level: str) -> AugmentConfig:
        presets = {
            "none": cls(scale_min=1.0, scale_max=1.0, hflip=0.0, hsv=0.0, random_place=False),
            "light": cls(scale_min=0.8, scale_max=1.2, hflip=0.5, hsv=0.15),
            "medium": cls(),
            "strong": cls(scale_min=0.4, scale_max=1.8, hflip=0.5, hsv=0.4),
        }
        return presets[level]


def augment(
    image_bgr: np.ndarray,
    boxes_xyxy: np.ndarray,
    class_ids: np.ndarray,
    spec: ModelSpec,
    config: AugmentConfig,
    rng: np.random.Generator,
    out_hw: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalised float32 [3,H,W], boxes in output pixels, class ids) for one training sample.

    Faces keep the scale they have at the model's input size (`spec.image_size`, the size evaluation
    and export use); `out_hw` smaller than that is a random crop of that canvas (crop training).
    """
    in_h, in_w = out_hw or spec.image_size
    base = Letterbox.fit(image_bgr.shape[:2], spec.image_size).scale * _canvas_scale(config, rng)
    scale = base * float(np.exp(rng.uniform(np.log(config.scale_min), np.log(config.scale_max))))
    new_h = max(1, round(image_bgr.shape[0] * scale))
    new_w = max(1, round(image_bgr.shape[1] * scale))
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4) * np.float32(scale)

    # random crop when larger than the input, random placement when smaller
    def offset(new: int, size: int) -> int:
        if new > size:
            return int(rng.integers(0, new - size + 1))
        return -int(rng.integers(0, size - new + 1)) if config.random_place else 0

    off_x, off_y = offset(new_w, in_w), offset(new_h, in_h)
    src_x0, src_y0 = max(off_x, 0), max(off_y, 0)
    crop = resized[src_y0 : src_y0 + in_h, src_x0 : src_x0 + in_w]
    dst_x0, dst_y0 = max(-off_x, 0), max(-off_y, 0)
    boxes -= np.array([off_x, off_y, off_x, off_y], np.float32)

    crop = _photometric(crop, config, rng)
    canvas = np.zeros((3, in_h, in_w), np.float32)
    view = canvas[:, dst_y0 : dst_y0 + crop.shape[0], dst_x0 : dst_x0 + crop.shape[1]]
    normalize_into(view, crop, spec.mean, spec.std)

    clipped, class_ids = clip_boxes(boxes, class_ids, in_h, in_w)
    return _maybe_flip(canvas, clipped, class_ids, config, rng)


def zoom_on_face(
    image_bgr: np.ndarray,
    boxes_xyxy: np.ndarray,
    class_ids: np.ndarray,
    spec: ModelSpec,
    config: AugmentConfig,
    rng: np.random.Generator,
    out_hw: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like `augment`, but scaled so that one randomly chosen face gets a size drawn evenly over the
    face-size buckets (a bucket, then a log-uniform size inside it), placed anywhere in the crop.

    Sizes are shares of the model's canvas long side, the measure evaluation reports by; a face is never
    made smaller than `ZOOM_SMALLEST_FACE` pixels nor larger than `ZOOM_LARGEST_SHARE` of the crop.
    The training photos hold almost no close-ups; this is where the network sees them.
    """
    boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
    if not len(boxes):
        return augment(image_bgr, boxes, class_ids, spec, config, rng, out_hw)
    in_h, in_w = out_hw or spec.image_size
    canvas_side = max(spec.image_size) * _canvas_scale(config, rng)
    low, high = FACE_SIZE_BUCKETS[int(rng.integers(0, len(FACE_SIZE_BUCKETS)))]
    smallest, largest = ZOOM_SMALLEST_FACE, ZOOM_LARGEST_SHARE * min(in_h, in_w)
    low_px = float(np.clip(max(low, 0.01) * canvas_side, smallest, largest))
    high_px = float(np.clip(min(high, 1.0) * canvas_side, low_px, largest))
    target = float(np.exp(rng.uniform(np.log(low_px), np.log(high_px))))
    # a face that reaches the size without more than the upscale limit, else the largest face, enlarged that much
    sides = np.sqrt(np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1.0))
    reachable = np.flatnonzero(sides * config.zoom_max_upscale >= target)
    if len(reachable) and config.zoom_class_weights is not None:
        weights = np.asarray(config.zoom_class_weights, np.float64)[np.asarray(class_ids)[reachable]]
        chosen = int(rng.choice(reachable, p=weights / weights.sum()))
    else:
        chosen = int(rng.choice(reachable)) if len(reachable) else int(np.argmax(sides))
    face = boxes[chosen]
    longer = float(max(face[2] - face[0], face[3] - face[1], 1.0))
    scale = min(target / float(sides[chosen]), config.zoom_max_upscale, largest / longer)  # the whole face stays in
    # the crop window in output pixels: anywhere that keeps the chosen face inside it
    fx0, fy0, fx1, fy1 = (face * scale).tolist()
    x0 = rng.uniform(min(fx1 - in_w, fx0), max(fx1 - in_w, fx0))
    y0 = rng.uniform(min(fy1 - in_h, fy0), max(fy1 - in_h, fy0))
    source, step = image_bgr, scale
    if scale < 0.5:  # shrink with area averaging first (warpAffine's bilinear sampling aliases), then halve
        source, step = cv2.resize(image_bgr, None, fx=scale * 2, fy=scale * 2, interpolation=cv2.INTER_AREA), 0.5
    # boxes use pixel corners, warpAffine pixel centres: the half-pixel term keeps pixels under their boxes
    shift = 0.5 * (step - 1.0)
    matrix = np.array([[step, 0, shift - x0], [0, step, shift - y0]], np.float64)
    crop = cv2.warpAffine(source, matrix, (in_w, in_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    crop = _photometric(crop, config, rng)
    canvas = np.zeros((3, in_h, in_w), np.float32)
    normalize_into(canvas, crop, spec.mean, spec.std)
    # outside the image the canvas is 0, as letterbox padding is after normalisation
    left, top = max(0, int(np.ceil(-x0))), max(0, int(np.ceil(-y0)))
    right = max(left, int(np.floor(image_bgr.shape[1] * scale - x0)))
    bottom = max(top, int(np.floor(image_bgr.shape[0] * scale - y0)))
    canvas[:, :top] = canvas[:, bottom:] = 0.0
    canvas[:, :, :left] = canvas[:, :, right:] = 0.0
    moved = boxes * np.float32(scale) - np.array([x0, y0, x0, y0], np.float32)
    clipped, kept_classes = clip_boxes(moved, class_ids, in_h, in_w)
    return _maybe_flip(canvas, clipped, kept_classes, config, rng)


def _canvas_scale(config: AugmentConfig, rng: np.random.Generator) -> float:
    """Multi-scale training: the drawn input size over the model's, so faces get the pixel size they have at that
    input (1 without `canvas_scales`, and then no draw: earlier runs replay exactly)."""
    if not config.canvas_scales:
        return 1.0
    return float(config.canvas_scales[int(rng.integers(0, len(config.canvas_scales)))])


def clip_boxes(boxes: np.ndarray, class_ids: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes clipped to the output; a box keeps its place only if enough of it stays inside."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    clipped = boxes.copy()
    np.clip(clipped[:, 0::2], 0, width, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0, height, out=clipped[:, 1::2])
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (cw >= MIN_KEPT_SIZE) & (ch >= MIN_KEPT_SIZE) & (cw * ch >= MIN_KEPT_AREA * np.maximum(area, 1e-6))
    return clipped[keep], np.asarray(class_ids)[keep]


def _maybe_flip(
    canvas: np.ndarray, boxes: np.ndarray, class_ids: np.ndarray, config: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    width = canvas.shape[2]
    if rng.random() < config.hflip:
        canvas = canvas[:, :, ::-1].copy()
        boxes = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
    return canvas, boxes.astype(np.float32).reshape(-1, 4), class_ids


def _photometric(image_bgr: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """HSV jitter, then with chance `config.photometric` one degradation other cameras show: defocus blur,
    JPEG compression or sensor noise (draws nothing more when the chance is 0, so older runs replay)."""
    if config.hsv > 0:
        image_bgr = _hsv_jitter(image_bgr, config.hsv, rng)
    if config.photometric <= 0 or not image_bgr.size or rng.random() >= config.photometric:
        return image_bgr
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return cv2.GaussianBlur(image_bgr, (0, 0), sigmaX=float(rng.uniform(0.6, 2.0)))
    if kind == 1:
        quality = int(rng.integers(20, 70))
        encoded = cv2.imencode(".jpg", np.ascontiguousarray(image_bgr), [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
        return cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    noise = rng.normal(0.0, float(rng.uniform(3.0, 12.0)), image_bgr.shape)
    return np.clip(image_bgr.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _hsv_jitter(image_bgr: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    gains = 1.0 + rng.uniform(-1, 1, 3) * np.array([0.1, 1.0, 1.0]) * strength
    hsv = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] * gains[0]) % 180
    hsv[..., 1:] = np.clip(hsv[..., 1:] * gains[1:], 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)


def mosaic(
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    spec: ModelSpec,
    config: AugmentConfig,
    rng: np.random.Generator,
    out_hw: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four (image, boxes, classes) samples in the four quadrants around a random centre.

    Each quadrant is an `augment` crop of its own image at the model's face scale (with `canvas_scales`, each
    at its own drawn input size), so a mosaic shows more faces and more context per step without changing
    the size faces have at evaluation.
    """
    if len(samples) != 4:
        raise ValueError(f"mosaic takes 4 samples, got {len(samples)}")
    out_h, out_w = out_hw or spec.image_size
    cx = int(round(rng.uniform(0.3, 0.7) * out_w))
    cy = int(round(rng.uniform(0.3, 0.7) * out_h))
    canvas = np.zeros((3, out_h, out_w), np.float32)
    all_boxes, all_classes = [], []
    for (x0, y0, x1, y1), (image, boxes, classes) in zip(
        ((0, 0, cx, cy), (cx, 0, out_w, cy), (0, cy, cx, out_h), (cx, cy, out_w, out_h)), samples
    ):
        tile, tile_boxes, tile_classes = augment(image, boxes, classes, spec, config, rng, (y1 - y0, x1 - x0))
        canvas[:, y0:y1, x0:x1] = tile
        all_boxes.append(tile_boxes + np.array([x0, y0, x0, y0], np.float32))
        all_classes.append(np.asarray(tile_classes))
    return canvas, np.concatenate(all_boxes).reshape(-1, 4), np.concatenate(all_classes)


def paste_patches(
    image_bgr: np.ndarray,
    boxes_xyxy: np.ndarray,
    class_ids: np.ndarray,
    patches: list[tuple[np.ndarray, int]],
    rng: np.random.Generator,
    tries: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copy-paste: put each (face patch, class) where it overlaps no box already there.

    Used for the rare class: every pasted face is one more positive of it per step. Patches that find
    no free place in `tries` draws are skipped; the input image is never modified.
    """
    out = image_bgr.copy()
    boxes = [np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)]
    classes = [np.asarray(class_ids, np.int64).reshape(-1)]
    height, width = out.shape[:2]
    for patch, class_id in patches:
        ph, pw = patch.shape[:2]
        if ph >= height or pw >= width:
            continue
        for _ in range(tries):
            x0, y0 = int(rng.integers(0, width - pw)), int(rng.integers(0, height - ph))
            new = np.array([x0, y0, x0 + pw, y0 + ph], np.float32)
            taken = np.concatenate(boxes)
            if not len(taken) or not _overlaps(new, taken).any():
                out[y0 : y0 + ph, x0 : x0 + pw] = patch
                boxes.append(new[None])
                classes.append(np.array([class_id], np.int64))
                break
    return out, np.concatenate(boxes), np.concatenate(classes)


def _overlaps(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    width = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    height = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    return (width > 0) & (height > 0)
