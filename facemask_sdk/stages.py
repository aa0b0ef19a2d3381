"""The three stages a `Detector` composes: pre-processing, the network, post-processing.

Each stage is one small interface with interchangeable implementations:
- pre-processing: `NumpyPreprocess` (the reference, `facemask_sdk.preprocess`) | `CudaPreprocess`;
- network: `OnnxRuntimeRunner` | `TensorRTRunner` (`facemask_sdk.backends`, the SDK's one lifecycle, `facemask_sdk.lifecycle.Resource`);
- post-processing: `NumpyPostprocess` (the reference, `facemask_sdk.postprocess`) | `CudaPostprocess`.

A stage says on which side its tensors live (`side`): `HOST` (NumPy arrays) or `DEVICE` (the buffers
of one `facemask_sdk.cuda.CudaKernels`, shared by every device stage). `Pipeline` joins three stages
and copies a tensor across only where two neighbours live on different sides, so CUDA pre-processing,
TensorRT and CUDA post-processing pass their tensors with no copy at all (the Jetson path), while
TensorRT with the NumPy post-processing (to debug the kernels) or ONNX Runtime with the CUDA kernels
fall out of the same code.

    >>> pipeline = Pipeline(NumpyPreprocess(spec), runner, NumpyPostprocess(spec, config))
    >>> detections, (pre_s, network_s, post_s) = pipeline.detect([frame])     # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from facemask_sdk.anchors import generate_anchors
from facemask_sdk.detections import Detections
from facemask_sdk.errors import FacemaskError
from facemask_sdk.postprocess import PostprocessConfig, postprocess_detections
from facemask_sdk.preprocess import Letterbox, preprocess
from facemask_sdk.spec import ModelSpec

HOST, DEVICE = "host", "device"
STAGE_TIMINGS = ("preprocess_ms", "inference_ms", "postprocess_ms")
"""Milliseconds of each stage of a call: the keys every runner's `last_timing` shares."""
TIMINGS = ("load_ms", *STAGE_TIMINGS, "total_ms")
"""`Detector.last_timing`'s milliseconds: reading and converting the images (`load_ms`, kept apart from
the stages: a JPEG decode can cost more than the network), the three stages, and their sum."""
STAGE_KINDS = ("numpy", "cuda")
"""The implementations of the pre- and post-processing stages, by the name `Detector` takes."""


class Preprocess(Protocol):
    side: str

    def frame_buffer(self, height: int, width: int) -> np.ndarray: ...

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray | None, Letterbox]:
        """The `[3, H, W]` input tensor on the host (None on the device: it is in the input buffer)."""


class Network(Protocol):
    """A `facemask_sdk.backends` runner. `device_dtypes` / `device_ordinal`: the dtypes and GPU of device
    buffers next to it; a device network also offers `bind(kernels)`, called once before use."""

    side: str
    spec: ModelSpec
    batch_size: int | None
    providers: tuple[str, ...]
    device_dtypes: tuple[np.dtype, np.dtype]
    device_ordinal: int

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Host side: `[N, 3, H, W]` -> logits `[N, A, C]`, boxes `[N, A, 4]`."""

    def enqueue(self) -> None:
        """Device side: the kernels' input buffer -> its head buffers, on its stream."""

    def close(self) -> None: ...


class Postprocess(Protocol):
    """A device implementation also offers `enqueue(letterbox)` and `collect()`: the two halves of
    `__call__` around the frame's one synchronisation."""

    side: str

    def __call__(self, head: tuple[np.ndarray, np.ndarray] | None, letterbox: Letterbox) -> Detections:
        """Detections from one image's head outputs (host arrays; None: in the kernels' head buffers)."""


class NumpyPreprocess:
    """Letterbox + normalisation on the host: the reference every other implementation is checked against."""

    side = HOST

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    def frame_buffer(self, height: int, width: int) -> np.ndarray:
        return np.zeros((height, width, 3), np.uint8)  # an ordinary array: nothing to gain on the host

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        return preprocess(frame, self.spec)


class NumpyPostprocess:
    """Decoding, NMS and top-k on the host: the reference of the CUDA kernels."""

    side = HOST

    def __init__(self, spec: ModelSpec, config: PostprocessConfig) -> None:
        self.spec, self.config = spec, config
        self.anchors = generate_anchors(spec)

    def __call__(self, head: tuple[np.ndarray, np.ndarray] | None, letterbox: Letterbox) -> Detections:
        logits, boxes = head
        return postprocess_detections(logits, boxes, self.anchors, letterbox, self.config, self.spec.classes)


def close_in_order(*resources: Any) -> None:
    """Close each resource (None skipped) even if an earlier one fails; the first failure is raised."""
    failure = None
    for resource in resources:
        try:
            if resource is not None:
                resource.close()
        except Exception as exc:  # noqa: BLE001  (re-raised below, after the others are closed)
            failure = failure or exc
    if failure is not None:
        raise failure


class Pipeline:
    """Three stages and, where any of them lives on the device, the `CudaKernels` whose buffers they share.

    `detect(frames)` returns the detections of each frame and the seconds spent in (pre-processing, the
    network, post-processing); a copy of the input tensor across sides counts as pre-processing, a copy
    of the head outputs as the network's (downloaded) or post-processing's (uploaded). A host network
    sees all frames as one batch; a device network (a batch-1 engine) runs frame by frame, timed by CUDA
    events when all three stages are on the device (nothing synchronises in between), else by the host
    clock with the device synchronised at each boundary.
    """

    def __init__(self, preprocess: Preprocess, network: Network, postprocess: Postprocess, kernels: Any = None) -> None:
        sides = {preprocess.side, network.side, postprocess.side}
        if DEVICE in sides and kernels is None:
            raise FacemaskError("a CUDA stage needs the device buffers (a CudaKernels) it shares")
        self.preprocess, self.network, self.postprocess, self.kernels = preprocess, network, postprocess, kernels
        self.fused = sides == {DEVICE}

    def frame_buffer(self, height: int, width: int) -> np.ndarray:
        return self.preprocess.frame_buffer(height, width)

    def detect(self, frames: list[np.ndarray]) -> tuple[list[Detections], tuple[float, float, float]]:
        if self.network.side == HOST:
            return self._batched(frames)
        results, totals = [], np.zeros(3)
        for frame in frames:
            detections, seconds = self._fused(frame) if self.fused else self._staged(frame)
            results.append(detections)
            totals += seconds
        return results, (float(totals[0]), float(totals[1]), float(totals[2]))

    def close(self) -> None:
        """The network first (its engine uses the device's buffers), then the kernels; idempotent."""
        close_in_order(self.network, self.kernels)

    def _batched(self, frames: list[np.ndarray]) -> tuple[list[Detections], tuple[float, float, float]]:
        t0 = time.perf_counter()
        tensors, letterboxes = [], []
        for frame in frames:
            tensor, letterbox = self.preprocess(frame)
            tensors.append(self.kernels.download_input() if tensor is None else tensor)
            letterboxes.append(letterbox)
        t1 = time.perf_counter()
        logits, boxes = self.network.run(np.stack(tensors))
        t2 = time.perf_counter()
        results = []
        for i, letterbox in enumerate(letterboxes):
            head = (logits[i], boxes[i])
            if self.postprocess.side == DEVICE:
                self.kernels.upload_head(*head)
                head = None
            results.append(self.postprocess(head, letterbox))
        return results, (t1 - t0, t2 - t1, time.perf_counter() - t2)

    def _fused(self, frame: np.ndarray) -> tuple[Detections, np.ndarray]:
        kernels = self.kernels
        kernels.mark(0)
        _, letterbox = self.preprocess(frame)
        kernels.mark(1)
        self.network.enqueue()
        kernels.mark(2)
        self.postprocess.enqueue(letterbox)
        kernels.mark(3)
        kernels.synchronize()  # the one synchronisation of the frame
        return self.postprocess.collect(), np.asarray(kernels.stage_ms()) / 1e3

    def _staged(self, frame: np.ndarray) -> tuple[Detections, np.ndarray]:
        kernels = self.kernels
        t0 = time.perf_counter()
        tensor, letterbox = self.preprocess(frame)
        if tensor is not None:
            kernels.upload_input(tensor)
        kernels.synchronize()
        t1 = time.perf_counter()
        self.network.enqueue()
        if self.postprocess.side == HOST:
            head = kernels.download_head()  # synchronises
        else:
            head = None
            kernels.synchronize()
        t2 = time.perf_counter()
        detections = self.postprocess(head, letterbox)
        return detections, np.array([t1 - t0, t2 - t1, time.perf_counter() - t2])
