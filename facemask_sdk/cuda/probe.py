"""Direct access to a `CudaPipeline`'s device buffers, for the kernel tests and the kernel benchmark:
they write head outputs without TensorRT, read the input tensor back, and read the top-K state, to
check each kernel against the NumPy reference. Production code never needs these.
"""

from __future__ import annotations

import numpy as np

from facemask_sdk.cuda.pipeline import CudaPipeline
from facemask_sdk.errors import FacemaskError


def upload_head(gpu: CudaPipeline, logits: np.ndarray, regressions: np.ndarray) -> None:
    """Copy one image's head outputs (`[A, C]`, `[A, 4]`, any float dtype) into the device buffers."""
    expected = {"logits": (gpu.num_anchors, gpu.num_classes), "regressions": (gpu.num_anchors, 4)}
    with gpu.active():
        for name, array in (("logits", logits), ("regressions", regressions)):
            array = np.asarray(array)
            if array.shape != expected[name]:
                raise FacemaskError(f"{name} must have shape {list(expected[name])}, got {list(array.shape)}")
            gpu._cuda.memcpy_htod_async(gpu._ptr[name], np.ascontiguousarray(array, gpu.head_dtype), gpu.stream)
        gpu.stream.synchronize()


def download_input(gpu: CudaPipeline) -> np.ndarray:
    """The input tensor `[3, H, W]` (after `synchronize()`), as a new array."""
    out = np.empty((3, *gpu.spec.image_size), gpu.input_dtype)
    with gpu.active():
        gpu.stream.synchronize()
        gpu._cuda.memcpy_dtoh(out, gpu.input_ptr)
    return out


def candidates(gpu: CudaPipeline) -> dict[str, np.ndarray | int]:
    """The state after top-K: `num_candidates` (passing the threshold), and the selected ones in rank
    order: `boxes`, `scores`, `class_ids`, `flat_index` (anchor * C + class)."""
    with gpu.active():
        gpu.stream.synchronize()
        gpu._pending = False
        counters = np.empty(4, np.uint32)
        gpu._cuda.memcpy_dtoh(counters, gpu._ptr["counters"])
        m = int(counters[1])
        out = {}
        for name, dtype, per in (("boxes", np.float32, 4), ("scores", np.float32, 1), ("classes", np.int32, 1),
                                 ("flat_index", np.uint32, 1)):
            host = np.empty(max(m * per, 1), dtype)
            gpu._cuda.memcpy_dtoh(host, gpu._ptr[name])
            out[name] = host[: m * per].reshape((m, 4) if per == 4 else (m,))
    return {"num_candidates": int(counters[0]), "boxes": out["boxes"], "scores": out["scores"],
            "class_ids": out["classes"].astype(np.int64), "flat_index": out["flat_index"].astype(np.int64)}
