"""Anchor boxes: effdet's multi-level anchor grid, re-done in NumPy (the runtime never imports effdet).

The order is effdet's (`effdet.anchors.Anchors`), the one the exported head outputs use:

    for level in min_level..max_level:          # P3 first
        for y in rows, for x in columns:        # row-major grid of that level
            for octave in range(num_scales):    # sizes 2**(octave / num_scales)
                for aspect in aspect_ratios:    # (aspect_x, aspect_y)

Level `l` has a `ceil(H / 2**l) x ceil(W / 2**l)` grid (effdet's `get_feat_sizes`), stride
`(H / rows, W / columns)`, centres at `stride / 2 + i * stride` and a box of
`anchor_scale * stride * 2**(octave / num_scales) * aspect`. effdet stores boxes as yxyx; we use xyxy.

    >>> from facemask_sdk.spec import ModelSpec
    >>> generate_anchors(ModelSpec("tf_efficientdet_d0", (512, 512))).shape
    (49104, 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from facemask_sdk.spec import AnchorSpec, ModelSpec


def feature_sizes(image_hw: tuple[int, int], max_level: int) -> list[tuple[int, int]]:
    """(rows, columns) of every level 0..max_level: each level halves the previous one, rounding up."""
    height, width = image_hw
    sizes = [(int(height), int(width))]
    for _ in range(max_level):
        height, width = (height - 1) // 2 + 1, (width - 1) // 2 + 1
        sizes.append((height, width))
    return sizes


def generate_anchors(spec: ModelSpec) -> np.ndarray:
    """All anchors of a model, float32 `[A, 4]` xyxy in network-input pixels, in effdet's order.

    The array is cached per (image size, anchor settings) and read-only; copy it to modify it.
    """
    return _anchors(tuple(int(v) for v in spec.image_size), spec.anchors)


def anchor_levels(spec: ModelSpec) -> np.ndarray:
    """The pyramid level (3 for P3, ...) of every anchor of `generate_anchors(spec)`, int64 `[A]`."""
    sizes = feature_sizes(tuple(int(v) for v in spec.image_size), spec.anchors.max_level)
    levels = range(spec.anchors.min_level, spec.anchors.max_level + 1)
    per_location = spec.anchors.anchors_per_location
    return np.repeat(
        np.arange(levels.start, levels.stop), [sizes[lv][0] * sizes[lv][1] * per_location for lv in levels]
    )


@lru_cache(maxsize=16)
def _anchors(image_hw: tuple[int, int], anchors: AnchorSpec) -> np.ndarray:
    sizes = feature_sizes(image_hw, anchors.max_level)
    # Per-location factors, octave-major then aspect (effdet's config order), float64 like effdet.
    octave_scales = 2.0 ** (np.arange(anchors.num_scales) / float(anchors.num_scales))
    octave = np.repeat(octave_scales, len(anchors.aspect_ratios))
    aspects = np.array([_aspect_xy(a) for a in anchors.aspect_ratios] * anchors.num_scales, dtype=np.float64)

    levels = []
    for level in range(anchors.min_level, anchors.max_level + 1):
        stride_y = sizes[0][0] / float(sizes[level][0])
        stride_x = sizes[0][1] / float(sizes[level][1])
        # np.arange exactly as effdet calls it, so the centres are bit-identical.
        x = np.arange(stride_x / 2, image_hw[1], stride_x)
        y = np.arange(stride_y / 2, image_hw[0], stride_y)
        xv, yv = np.meshgrid(x, y)  # row-major: y outer, x inner
        xv, yv = xv.reshape(-1, 1), yv.reshape(-1, 1)  # [P, 1]
        # Same operation order as effdet, so the float64 sizes (and the float32 boxes) are identical.
        hx = (anchors.anchor_scale * stride_x * octave * aspects[:, 0] / 2.0)[None, :]  # [1, K]
        hy = (anchors.anchor_scale * stride_y * octave * aspects[:, 1] / 2.0)[None, :]
        boxes = np.stack([xv - hx, yv - hy, xv + hx, yv + hy], axis=-1)  # [P, K, 4]
        levels.append(boxes.reshape(-1, 4))

    out = np.concatenate(levels, axis=0).astype(np.float32)
    out.flags.writeable = False
    return out


def _aspect_xy(aspect: float | Sequence[float]) -> tuple[float, float]:
    """effdet's aspect convention: a pair is (x, y) multipliers; a single ratio r is (sqrt r, 1/sqrt r)."""
    if isinstance(aspect, Sequence):
        return float(aspect[0]), float(aspect[1])
    aspect_x = float(np.sqrt(aspect))
    return aspect_x, 1.0 / aspect_x
