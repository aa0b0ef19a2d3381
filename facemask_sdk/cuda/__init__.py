"""CUDA kernels: letterbox pre-processing, decoding, top-K and NMS, the device side of the stages.

`kernels.cu` holds the CUDA C source (compiled at run time by pycuda, cached on disk); `plans` turns
frames and settings into launches (pure Python); `kernels.CudaKernels` runs them on one stream with
buffers allocated once (the device buffers every device stage shares); `stages` are the CUDA pre- and
post-processing stages over it (the tests read its top-K state with tests/helpers/cuda_topk_probe.py).
Importing this package does not import pycuda: only creating a `CudaKernels` does.
"""

from __future__ import annotations

from facemask_sdk.cuda.kernels import CudaKernels
from facemask_sdk.cuda.plans import KERNEL_ARGS, KERNEL_SOURCE, NVCC_OPTIONS

__all__ = ["KERNEL_ARGS", "KERNEL_SOURCE", "NVCC_OPTIONS", "CudaKernels"]
