"""The CUDA implementations of the pre- and post-processing stages (`facemask_sdk.stages`): the
letterbox kernel writing into the kernels' input buffer, and decoding + top-K + NMS reading its head
buffers. Both are views of one `CudaKernels`, which owns the kernels, buffers and stream.
"""

from __future__ import annotations

import numpy as np

from facemask_sdk.cuda.kernels import CudaKernels
from facemask_sdk.detections import Detections
from facemask_sdk.preprocess import Letterbox
from facemask_sdk.stages import DEVICE


class CudaPreprocess:
    """Letterbox + normalisation on the GPU; frames from `frame_buffer` are read in place."""

    side = DEVICE

    def __init__(self, kernels: CudaKernels) -> None:
        self.kernels = kernels

    def frame_buffer(self, height: int, width: int) -> np.ndarray:
        return self.kernels.frame_buffer(height, width)  # pinned (on Jetson mapped) memory

    def __call__(self, frame: np.ndarray) -> tuple[None, Letterbox]:
        return None, self.kernels.preprocess(frame)  # enqueued: the tensor is in the input buffer


class CudaPostprocess:
    """Decoding, top-K and NMS on the GPU, detections written to (mapped) host memory."""

    side = DEVICE

    def __init__(self, kernels: CudaKernels) -> None:
        self.kernels = kernels

    def enqueue(self, letterbox: Letterbox) -> None:
        self.kernels.decode_nms(letterbox)

    def collect(self) -> Detections:
        boxes, scores, class_ids = self.kernels.results()
        return Detections(boxes, scores, class_ids, self.kernels.spec.classes)

    def __call__(self, head: tuple[np.ndarray, np.ndarray] | None, letterbox: Letterbox) -> Detections:
        if head is not None:
            self.kernels.upload_head(*head)
        self.enqueue(letterbox)
        self.kernels.synchronize()
        return self.collect()
