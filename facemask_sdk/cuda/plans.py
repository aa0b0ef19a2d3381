"""Kernel launch plans for `kernels.cu`: pure Python, no pycuda.

They turn a frame, a `Letterbox` and a `PostprocessConfig` into kernel launches (name, grid, block,
arguments in `KERNEL_ARGS` order) and buffer layouts. `CudaKernels` runs them on the GPU; the CPU
tests run the very same plans on an emulator of the kernels, so launch geometry and argument order
are checked without a GPU. `KERNEL_CONSTANTS` is the one source of the sizes both sides share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facemask_sdk.errors import FacemaskError
from facemask_sdk.preprocess import Letterbox
from facemask_sdk.spec import ModelSpec
from facemask_sdk.validation import whole_number

KERNEL_SOURCE = Path(__file__).with_name("kernels.cu")
KERNEL_CONSTANTS: dict[str, int] = {
    "FM_SELECT_THREADS": 512,  # fm_topk_select runs as one block of this many threads
    "FM_COARSE_BITS": 11,  # top bits of a key counted by fm_decode_candidates_* (first radix digit)
    "FM_NMS_BLOCK": 64,  # boxes per NMS mask word
    "FM_MAX_TOPK": 16384,  # largest top_k the NMS reduction supports (256 mask words)
    "FM_RANK_THREADS": 256,  # threads per block of fm_rank_decode_*
}
"""The one source of the sizes that the kernels and the buffer plans share: passed to nvcc (and to the
CPU emulator's compiler) as -D definitions; `kernels.cu` refuses to compile without them."""

KERNEL_DEFINES = tuple(f"-D{name}={value}" for name, value in KERNEL_CONSTANTS.items())
NVCC_OPTIONS = ("--fmad=false", *KERNEL_DEFINES)
"""No a*b+c contraction (the kernels round like the NumPy reference), and the shared constants."""

MAX_TOP_K = KERNEL_CONSTANTS["FM_MAX_TOPK"]
COARSE_BINS = 1 << KERNEL_CONSTANTS["FM_COARSE_BITS"]
NMS_BLOCK = KERNEL_CONSTANTS["FM_NMS_BLOCK"]
SELECT_THREADS = KERNEL_CONSTANTS["FM_SELECT_THREADS"]
RANK_THREADS = KERNEL_CONSTANTS["FM_RANK_THREADS"]
DECODE_THREADS = 256
REDUCE_THREADS = 256
LETTERBOX_BLOCK = (32, 8, 1)

KERNEL_ARGS: dict[str, str] = {
    # struct/pycuda formats: P pointer, d double, f float, i int32, I uint32 (order = kernels.cu)
    "fm_letterbox_f32": "PPdd" + "i" * 7 + "f" * 6,
    "fm_letterbox_f16": "PPdd" + "i" * 7 + "f" * 6,
    "fm_reset_counters": "PP",
    "fm_decode_candidates_f32": "PPPPIf",
    "fm_decode_candidates_f16": "PPPPIf",
    "fm_topk_select": "PPPPI",
    "fm_rank_decode_f32": "PPPPPPPPIfff",
    "fm_rank_decode_f16": "PPPPPPPPIfff",
    "fm_nms_mask": "PPPPfi",
    "fm_nms_reduce": "PPPPP" + "PPPP" + "I",
}
_DTYPE_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16"}


@dataclass(frozen=True)
class Launch:
    """One kernel launch: `kernel<<<grid, block>>>(*args)` with `args` in `KERNEL_ARGS[kernel]` order."""

    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple


@dataclass(frozen=True)
class DecodeSettings:
    """The decoding settings the kernels use; built from a `PostprocessConfig` (or anything alike)."""

    logit_threshold: float
    iou_threshold: float
    max_detections: int
    top_k: int
    class_agnostic: bool = True

    @classmethod
    def from_config(cls, config: Any) -> DecodeSettings:
        top_k = whole_number("top_k (the CUDA decoder's limit)", int(config.top_k), 1, MAX_TOP_K)
        max_det = whole_number("max_detections", int(config.max_detections))
        return cls(
            float(config.logit_threshold),
            float(config.iou_threshold),
            max_det,
            top_k,
            bool(getattr(config, "class_agnostic", True)),
        )


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def io_dtype(dtype: Any) -> np.dtype:
    """float32 or float16, the tensor dtypes the kernels read and write."""
    dtype = np.dtype(dtype)
    if dtype not in _DTYPE_SUFFIX:
        raise FacemaskError(f"CUDA kernels take float32 or float16 tensors, got {dtype}")
    return dtype


def decode_buffer_specs(
    num_anchors: int, num_classes: int, settings: DecodeSettings
) -> dict[str, tuple[np.dtype, int]]:
    """Name -> (dtype, element count) of every buffer decoding + NMS needs (sizes fixed per model)."""
    k, words = settings.top_k, _cdiv(settings.top_k, NMS_BLOCK)
    return {
        "counters": (np.dtype(np.uint32), 4),
        "coarse_hist": (np.dtype(np.uint32), COARSE_BINS),
        "cand_keys": (np.dtype(np.uint64), num_anchors * num_classes),
        "sel_keys": (np.dtype(np.uint64), k),
        "boxes": (np.dtype(np.float32), 4 * k),
        "scores": (np.dtype(np.float32), k),
        "classes": (np.dtype(np.int32), k),
        "flat_index": (np.dtype(np.uint32), k),
        "mask": (np.dtype(np.uint64), k * words),
    }


def output_specs(max_detections: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Name -> (dtype, shape) of the fixed-size output: detections in rank order and their count."""
    return {
        "out_boxes": (np.dtype(np.float32), (max_detections, 4)),
        "out_scores": (np.dtype(np.float32), (max_detections,)),
        "out_classes": (np.dtype(np.int32), (max_detections,)),
        "out_count": (np.dtype(np.uint32), (1,)),
    }


def plan_letterbox(
    frame_ptr: int,
    frame_hw: tuple[int, int],
    pitch: int,
    out_ptr: int,
    out_dtype: Any,
    spec: ModelSpec,
) -> tuple[Launch, Letterbox]:
    """The launch that letterboxes a BGR uint8 frame (rows `pitch` bytes apart) into a `[3, H, W]` tensor."""
    letterbox = Letterbox.fit(frame_hw, spec.image_size)
    (src_h, src_w), (dst_h, dst_w), (rs_h, rs_w) = letterbox.original_hw, letterbox.input_hw, letterbox.resized_hw
    scale_x, scale_y = 1.0 / (rs_w / src_w), 1.0 / (rs_h / src_h)  # exactly OpenCV's double scales
    bx, by, _ = LETTERBOX_BLOCK
    launch = Launch(
        f"fm_letterbox_{_DTYPE_SUFFIX[io_dtype(out_dtype)]}",
        (_cdiv(dst_w, bx), _cdiv(dst_h, by), 1),
        LETTERBOX_BLOCK,
        (
            int(frame_ptr),
            int(out_ptr),
            scale_x,
            scale_y,
            src_h,
            src_w,
            int(pitch),
            dst_h,
            dst_w,
            rs_h,
            rs_w,
            *(float(m) for m in spec.mean),
            *(float(s) for s in spec.std),
        ),
    )
    return launch, letterbox


def plan_decode(
    ptr: Mapping[str, int],
    num_anchors: int,
    num_classes: int,
    letterbox: Letterbox,
    settings: DecodeSettings,
    head_dtype: Any = np.float32,
) -> list[Launch]:
    """Launches of decoding, top-K and NMS. `ptr` maps every name of `decode_buffer_specs` and
    `output_specs` plus "logits" `[A, C]`, "box_codes" `[A, 4]` (head dtype) and "anchors" `[A, 4]`
    (float32 xyxy) to device addresses."""
    suffix = _DTYPE_SUFFIX[io_dtype(head_dtype)]
    total = num_anchors * num_classes
    words = _cdiv(settings.top_k, NMS_BLOCK)
    height, width = letterbox.original_hw
    return [
        Launch("fm_reset_counters", (1, 1, 1), (256, 1, 1), (ptr["counters"], ptr["coarse_hist"])),
        Launch(
            f"fm_decode_candidates_{suffix}",
            (_cdiv(total, DECODE_THREADS), 1, 1),
            (DECODE_THREADS, 1, 1),
            (ptr["logits"], ptr["cand_keys"], ptr["counters"], ptr["coarse_hist"], total, settings.logit_threshold),
        ),
        Launch(
            "fm_topk_select",
            (1, 1, 1),
            (SELECT_THREADS, 1, 1),
            (ptr["cand_keys"], ptr["counters"], ptr["coarse_hist"], ptr["sel_keys"], settings.top_k),
        ),
        Launch(
            f"fm_rank_decode_{suffix}",
            (_cdiv(settings.top_k, RANK_THREADS), 1, 1),
            (RANK_THREADS, 1, 1),
            (
                ptr["sel_keys"],
                ptr["counters"],
                ptr["box_codes"],
                ptr["anchors"],
                ptr["boxes"],
                ptr["scores"],
                ptr["classes"],
                ptr["flat_index"],
                num_classes,
                float(np.float32(letterbox.scale)),
                float(height),
                float(width),
            ),
        ),
        Launch(
            "fm_nms_mask",
            (words, words, 1),
            (NMS_BLOCK, 1, 1),
            (
                ptr["boxes"],
                ptr["classes"],
                ptr["counters"],
                ptr["mask"],
                settings.iou_threshold,
                int(settings.class_agnostic),
            ),
        ),
        Launch(
            "fm_nms_reduce",
            (1, 1, 1),
            (REDUCE_THREADS, 1, 1),
            (
                ptr["mask"],
                ptr["boxes"],
                ptr["scores"],
                ptr["classes"],
                ptr["counters"],
                ptr["out_boxes"],
                ptr["out_scores"],
                ptr["out_classes"],
                ptr["out_count"],
                settings.max_detections,
            ),
        ),
    ]


def check_frame(frame: object) -> np.ndarray:
    """A BGR uint8 `HxWx3` array with contiguous pixels (rows may be padded), else `FacemaskError`."""
    if not isinstance(frame, np.ndarray):
        raise FacemaskError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
        raise FacemaskError(f"frame must be a BGR uint8 HxWx3 array, got {frame.dtype} with shape {frame.shape}")
    return frame
