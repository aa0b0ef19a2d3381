"""The top-K state inside a `CudaKernels`, for the kernel tests (tests/facemask_sdk/cuda, tests/gpu) and the
kernel benchmark, to check that kernel against the NumPy reference on its own: test code, reading the
kernels' private buffers. Production code never needs it (head outputs in
and the input tensor out are the kernels' own `upload_head` / `download_input`).
"""

from __future__ import annotations

import numpy as np

from facemask_sdk.cuda.kernels import CudaKernels


def candidates(gpu: CudaKernels) -> dict[str, np.ndarray | int]:
    """The state after top-K: `num_candidates` (passing the threshold), and the selected ones in rank
    order: `boxes`, `scores`, `class_ids`, `flat_index` (anchor * C + class)."""
    with gpu.active():
        gpu.stream.synchronize()
        gpu._pending = False
        counters = np.empty(4, np.uint32)
        gpu._cuda.memcpy_dtoh(counters, gpu._ptr["counters"])
        m = int(counters[1])
        out = {}
        for name, dtype, per in (
            ("boxes", np.float32, 4),
            ("scores", np.float32, 1),
            ("classes", np.int32, 1),
            ("flat_index", np.uint32, 1),
        ):
            host = np.empty(max(m * per, 1), dtype)
            gpu._cuda.memcpy_dtoh(host, gpu._ptr[name])
            out[name] = host[: m * per].reshape((m, 4) if per == 4 else (m,))
    return {
        "num_candidates": int(counters[0]),
        "boxes": out["boxes"],
        "scores": out["scores"],
        "class_ids": out["classes"].astype(np.int64),
        "flat_index": out["flat_index"].astype(np.int64),
    }
