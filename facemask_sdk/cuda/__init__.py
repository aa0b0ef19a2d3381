"""CUDA kernels for the TensorRT path: letterbox pre-processing, decoding, top-K and class-aware NMS.

`kernels.cu` holds the CUDA C source (compiled at run time by pycuda, cached on disk);
`pipeline.CudaPipeline` runs it on one stream with buffers allocated once. Importing this package does
not import pycuda: only creating a `CudaPipeline` does.
"""

from __future__ import annotations

from facemask_sdk.cuda.pipeline import KERNEL_ARGS, KERNEL_SOURCE, NVCC_OPTIONS, CudaPipeline

__all__ = ["KERNEL_ARGS", "KERNEL_SOURCE", "NVCC_OPTIONS", "CudaPipeline"]
