"""`Detector`: image in, `Detections` out, on whichever backend the model file calls for.

    >>> from facemask_sdk import Detector
    >>> with Detector() as detector:                      # the shipped ONNX model, CPU or CUDA
    ...     detections = detector("photo.jpg")            # or a BGR uint8 HxWx3 array
    ...     detections.summary(), detector.last_timing

Three stages behind one contract (`HostStages` / `DeviceStages`: `detect(frames) -> (detections, stage
seconds)`, `frame_buffer(h, w)`), chosen once when the model loads; `detect_batch` never asks which:
- `.onnx` on ONNX Runtime: `HostStages`: letterbox + normalise (`facemask_sdk.preprocess`), the runner's
  `run(batch)`, then decoding, NMS (one box per face) and top-k in NumPy (`facemask_sdk.postprocess`);
- `.engine` on TensorRT: `DeviceStages`: CUDA pre-processing, TensorRT and CUDA post-processing sharing
  device buffers (`facemask_sdk.backends.tensorrt`, imported only then). `HostStages` over the same
  runner (its `run`) is the debugging path that checks the kernels against the NumPy reference.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np

from facemask_sdk.anchors import generate_anchors
from facemask_sdk.detections import Detections
from facemask_sdk.errors import FacemaskError, ModelFileError
from facemask_sdk.image_io import read_image, to_bgr8
from facemask_sdk.models import default_model_path
from facemask_sdk.postprocess import PostprocessConfig, postprocess_detections
from facemask_sdk.preprocess import Letterbox, preprocess
from facemask_sdk.spec import ModelSpec

ImageInput = Union[np.ndarray, str, os.PathLike]

BACKEND_ALIASES = {
    "onnxruntime": "onnxruntime",
    "onnx": "onnxruntime",
    "ort": "onnxruntime",
    "tensorrt": "tensorrt",
    "trt": "tensorrt",
}
SUFFIX_BACKENDS = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt"}


class Detector:
    """A face-mask detector around one model file.

    `model`: `.onnx` (ONNX Runtime) or `.engine` (TensorRT) file; `None` is the shipped model
    (`facemask_sdk.models.default_model_path`). `backend`: `"auto"` (by file type), `"onnxruntime"`
    or `"tensorrt"`. Thresholds are in [0, 1]; `providers`/`threads` go to ONNX Runtime.
    `class_agnostic` (default True): one box per face, with its best class; False keeps overlapping
    boxes of different classes (effdet's class-aware NMS).

    After each call `last_timing` holds `preprocess_ms`, `inference_ms`, `postprocess_ms` and
    `total_ms` of that call (summed over the images of `detect_batch`) and `images`.

    Threads: an ONNX Runtime `Detector` may be shared by several threads (its session runs concurrent
    calls); `last_timing` is per thread, the timing of that thread's own last call. A TensorRT
    `Detector` belongs to the thread that created it (one CUDA stream and buffer set): create one
    per thread; they share the deserialized engine.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        backend: str = "auto",
        score_threshold: float = 0.4,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        class_agnostic: bool = True,
    ) -> None:
        if model is not None and not isinstance(model, (str, os.PathLike)):
            raise FacemaskError(f"model must be a path to an .onnx or .engine file (or None), got {type(model).__name__}")
        self._timings = threading.local()
        self.config = PostprocessConfig(
            score_threshold=score_threshold, iou_threshold=iou_threshold, max_detections=max_detections,
            class_agnostic=class_agnostic,
        )
        self.model_path = default_model_path() if model is None else Path(model)
        self.backend = _resolve_backend(backend, self.model_path)
        if not self.model_path.exists():
            raise FileNotFoundError(f"model file not found: {self.model_path}")
        self._runner = None
        if self.backend == "onnxruntime":
            from facemask_sdk.backends.onnxrt import OnnxRuntimeRunner

            self._runner = OnnxRuntimeRunner(self.model_path, providers=providers, threads=threads)
            self._stages: HostStages | DeviceStages = HostStages(self._runner, self.config)
        else:
            self._runner = _tensorrt_runner(self.model_path, self.config)
            self._stages = DeviceStages(self._runner)
        self.spec: ModelSpec = self._runner.spec

    @property
    def last_timing(self) -> dict[str, float]:
        """Stage timings of the calling thread's last call (empty before its first)."""
        return dict(getattr(self._timings, "value", {}))

    @last_timing.setter
    def last_timing(self, value: dict[str, float]) -> None:
        self._timings.value = value

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._runner is None

    @property
    def batch_size(self) -> int | None:
        """The model's static batch size (None when its batch axis is dynamic); `detect_batch` chunks by it."""
        return getattr(self._runner, "batch_size", 1)

    @property
    def providers(self) -> list[str]:
        """ONNX Runtime execution providers in use (empty for other backends or once closed)."""
        return list(getattr(self._runner, "providers", None) or [])

    def close(self) -> None:
        """Free the backend (session, engine, buffers); calling it again does nothing."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()

    def __enter__(self) -> "Detector":
        self._check_open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.backend
        return f"Detector({str(self.model_path)!r}, {self.spec.architecture}, {state})"

    def _check_open(self) -> None:
        if self._runner is None:
            raise FacemaskError(f"this Detector ({self.model_path}) is closed; create a new one")

    def stream(self, sources, max_frames: int | None = None, timeout_s: float | None = None):
        """`(frame, detections)` for every frame of `sources` (a path, folder, glob, video, camera index,
        RTSP/HTTP URL, or a list of them), with running totals in `.totals` (`facemask_sdk.stream`)."""
        from facemask_sdk.sources import DEFAULT_TIMEOUT_S
        from facemask_sdk.stream import DetectionStream

        self._check_open()
        return DetectionStream(self, sources, max_frames, DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)

    def frame_buffer(self, height: int, width: int) -> np.ndarray:
        """A BGR uint8 `height x width x 3` array to capture frames into (`cap.read(frame)`).

        On TensorRT it is a view of page-locked memory: mapped into the GPU on Jetson, so the frame reaches
        the kernels without a copy, or uploaded with one async copy on a discrete GPU; on other backends it is an ordinary array (nothing to gain there).
        """
        self._check_open()
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise FacemaskError(f"frame_buffer {name} must be a whole number of pixels, got {value!r}")
        if height <= 0 or width <= 0:
            raise FacemaskError(f"frame_buffer needs a positive height and width, got {height}x{width}")
        return self._stages.frame_buffer(int(height), int(width))

    # -- detection ---------------------------------------------------------------------------------

    def __call__(self, image: ImageInput) -> Detections:
        """Detections in one image: a BGR uint8 HxWx3 array (grayscale/BGRA/16-bit are converted) or a path."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Iterable[ImageInput]) -> list[Detections]:
        """Detections for each image, in order; the network sees them as one batch where it can."""
        self._check_open()
        if isinstance(images, (np.ndarray, str, os.PathLike)):
            raise FacemaskError("detect_batch takes a list of images; use detector(image) for one image")
        start = time.perf_counter()
        frames = [load_image(image, f"images[{i}]") for i, image in enumerate(images)]
        if not frames:
            self.last_timing = _timing(0, 0.0, 0.0, 0.0)
            return []
        results, stage_seconds = self._stages.detect(frames)
        load_s = time.perf_counter() - start - sum(stage_seconds)
        pre_s, inference_s, post_s = stage_seconds
        self.last_timing = _timing(len(frames), load_s + pre_s, inference_s, post_s)
        return results


class HostStages:
    """Pre-processing and post-processing on the host (the NumPy reference) around a runner whose
    `run(batch) -> (logits, boxes)` gives raw head outputs: ONNX Runtime on any device."""

    def __init__(self, runner, config: PostprocessConfig) -> None:
        self.runner, self.config = runner, config
        self.spec: ModelSpec = runner.spec
        self.anchors = generate_anchors(self.spec)

    def frame_buffer(self, height: int, width: int) -> np.ndarray:
        return np.zeros((height, width, 3), np.uint8)  # an ordinary array: nothing to gain on the host

    def detect(self, frames: list[np.ndarray]) -> tuple[list[Detections], tuple[float, float, float]]:
        """Detections per frame and the seconds of (pre-processing, inference, post-processing)."""
        t0 = time.perf_counter()
        prepared = [preprocess(frame, self.spec) for frame in frames]
        batch = np.stack([chw for chw, _ in prepared])
        t1 = time.perf_counter()
        logits, boxes = self.runner.run(batch)
        t2 = time.perf_counter()
        results = [self._postprocess(logits[i], boxes[i], box) for i, (_, box) in enumerate(prepared)]
        return results, (t1 - t0, t2 - t1, time.perf_counter() - t2)

    def _postprocess(self, logits: np.ndarray, boxes: np.ndarray, letterbox: Letterbox) -> Detections:
        return postprocess_detections(logits, boxes, self.anchors, letterbox, self.config, self.spec.classes)


class DeviceStages:
    """CUDA pre-processing, TensorRT and CUDA post-processing sharing device buffers: the runner's
    `infer(frame) -> Detections` does all three and reports each stage's GPU time (`last_timing`)."""

    def __init__(self, runner) -> None:
        self.runner = runner

    def frame_buffer(self, height: int, width: int) -> np.ndarray:
        return self.runner.frame_buffer(height, width)  # pinned memory the kernels read in place

    def detect(self, frames: list[np.ndarray]) -> tuple[list[Detections], tuple[float, float, float]]:
        results, totals = [], [0.0, 0.0, 0.0]
        for frame in frames:
            t0 = time.perf_counter()
            results.append(self.runner.infer(frame))
            timing = dict(getattr(self.runner, "last_timing", None) or {})
            keys = ("preprocess_ms", "inference_ms", "postprocess_ms")
            stages = [float(timing[k]) / 1e3 for k in keys] if all(k in timing for k in keys) else \
                [0.0, time.perf_counter() - t0, 0.0]  # a runner that does not split its stages
            totals = [a + b for a, b in zip(totals, stages)]
        return results, (totals[0], totals[1], totals[2])


def load_image(image: ImageInput, source: str = "image") -> np.ndarray:
    """A path (str or PathLike) is read from disk; an array is validated and converted to BGR uint8."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    return to_bgr8(image, source=source)


def _timing(images: int, preprocess_s: float, inference_s: float, postprocess_s: float) -> dict[str, float]:
    stages = {
        "preprocess_ms": preprocess_s * 1e3,
        "inference_ms": inference_s * 1e3,
        "postprocess_ms": postprocess_s * 1e3,
    }
    return {**stages, "total_ms": sum(stages.values()), "images": images}


def _resolve_backend(backend: str, path: Path) -> str:
    if not isinstance(backend, str):
        raise FacemaskError(f"backend must be a string, got {type(backend).__name__}")
    name = backend.lower()
    if name == "auto":
        suffix = path.suffix.lower()
        if suffix not in SUFFIX_BACKENDS:
            raise ModelFileError(
                f"cannot tell the backend of {path} from its suffix {suffix or '(none)'!r}; expected "
                f"{', '.join(SUFFIX_BACKENDS)} or pass backend='onnxruntime' / 'tensorrt'"
            )
        return SUFFIX_BACKENDS[suffix]
    if name not in BACKEND_ALIASES:
        raise FacemaskError(f"unknown backend {backend!r}; choose auto, onnxruntime or tensorrt")
    return BACKEND_ALIASES[name]


def _tensorrt_runner(path: Path, config: PostprocessConfig):
    """The TensorRT backend (it runs the whole pipeline, `infer(image_bgr) -> Detections`)."""
    try:
        from facemask_sdk.backends.tensorrt import TensorRTRunner

        return TensorRTRunner(path, config=config)
    except ImportError as exc:  # tensorrt / pycuda missing, at import or when the runner loads them
        missing = getattr(exc, "name", None) or str(exc)
        raise FacemaskError(
            f"{path} is a TensorRT engine, which needs TensorRT and pycuda on an NVIDIA GPU "
            f"(missing: {missing}); use the .onnx model on this machine instead"
        ) from None
