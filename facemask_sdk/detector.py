"""`Detector`: image in, `Detections` out, on whichever backend the model file calls for.

    >>> from facemask_sdk import Detector
    >>> with Detector() as detector:                      # the shipped ONNX model, CPU or CUDA
    ...     detections = detector("photo.jpg")            # or a BGR uint8 HxWx3 array
    ...     detections.summary(), detector.last_timing

Three stages composed once, when the model loads (`facemask_sdk.stages.Pipeline`); `detect_batch` never
asks which they are:
- pre-processing: `"numpy"` (letterbox + normalise, `facemask_sdk.preprocess`) or `"cuda"` (the kernels);
- the network: ONNX Runtime for `.onnx`, TensorRT for `.engine` (`NETWORKS`, imported only when used);
- post-processing: `"numpy"` (decoding, one box per face, top-k: `facemask_sdk.postprocess`) or `"cuda"`.
`"auto"` (the default) takes the network's own side: NumPy around ONNX Runtime, the CUDA kernels around
TensorRT, sharing its device buffers (no copy). Any other mix works too: `Detector("m.engine",
postprocess="numpy")` checks the kernels against the reference; `Detector("m.onnx", preprocess="cuda")`
runs the kernels around ONNX Runtime.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facemask_sdk.closeups import DEFAULT_CLOSEUP_CHECK, CloseupCheck, check_closeups, shrink_frames
from facemask_sdk.cuda.stages import CudaPostprocess, CudaPreprocess  # pycuda is imported only by CudaKernels()
from facemask_sdk.detections import Detections
from facemask_sdk.errors import FacemaskError, ModelFileError
from facemask_sdk.image_io import read_image, to_bgr8
from facemask_sdk.lifecycle import Resource
from facemask_sdk.models import default_model_path
from facemask_sdk.postprocess import PostprocessConfig
from facemask_sdk.spec import ModelSpec
from facemask_sdk.stages import (
    DEVICE,
    HOST,
    STAGE_KINDS,
    STAGE_TIMINGS,
    NumpyPostprocess,
    NumpyPreprocess,
    Pipeline,
    close_in_order,
)

if TYPE_CHECKING:
    from facemask_sdk.sources import Source
    from facemask_sdk.stream import DetectionStream
    from facemask_sdk.tracking import TrackerConfig

ImageInput = np.ndarray | str | os.PathLike

BACKEND_ALIASES = {
    "onnxruntime": "onnxruntime",
    "onnx": "onnxruntime",
    "ort": "onnxruntime",
    "tensorrt": "tensorrt",
    "trt": "tensorrt",
    "openvino": "openvino",
    "ov": "openvino",
}
SUFFIX_BACKENDS = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt"}


class Detector(Resource):
    """A face-mask detector around one model file.

    `model`: `.onnx` (ONNX Runtime) or `.engine` (TensorRT) file; `None` is the shipped model
    (`facemask_sdk.models.default_model_path`). `backend`: `"auto"` (by file type), `"onnxruntime"`,
    `"openvino"` (the `.onnx` compiled by OpenVINO for an x86 CPU, bf16 where native) or `"tensorrt"`.
    Thresholds are in [0, 1]; `providers` go to ONNX Runtime, `threads` to ONNX Runtime or OpenVINO.
    `input_size`: the side the network reads, a multiple of 128 (512 and 640 are faster than the
    trained 768 and miss more small faces: the model card's table); it needs a model exported with a
    dynamic input size, as the shipped one, or an engine built for that size.
    `class_agnostic` (default True): one box per face, with its best class; False keeps overlapping
    boxes of different classes (effdet's class-aware NMS). `closeup_check` (default: on with
    `class_agnostic`): a frame with a confident large face gets a second pass on the image shrunk, whose
    classes those faces take (`facemask_sdk.closeups`, `DEFAULT_CLOSEUP_CHECK`: the model gets close-ups'
    classes wrong far more often); `False` skips it, a `CloseupCheck` sets it. `preprocess` / `postprocess`: `"auto"`,
    `"numpy"` or `"cuda"` (see the module's docstring); `stages` says which were chosen.

    After each call `last_timing` holds `load_ms` (reading and converting the images), `preprocess_ms`,
    `inference_ms`, `postprocess_ms` and `total_ms` of that call (summed over the images of `detect_batch`,
    and over the close-up check's second pass where it ran), `images` and `closeup_checks` (frames that got
    the second pass).

    Threads: a `Detector` of NumPy stages around ONNX Runtime may be shared by several threads (its
    session runs concurrent calls); `last_timing` is per thread, the timing of that thread's own last
    call. One with any CUDA stage, and every TensorRT one, belongs to the thread that created it (one
    CUDA stream and buffer set): create one per thread; TensorRT ones share the deserialized engine.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        backend: str = "auto",
        score_threshold: float = PostprocessConfig.score_threshold,
        iou_threshold: float = PostprocessConfig.iou_threshold,
        max_detections: int = PostprocessConfig.max_detections,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        class_agnostic: bool = True,
        preprocess: str = "auto",
        postprocess: str = "auto",
        input_size: int | None = None,
        closeup_check: bool | CloseupCheck | None = None,
    ) -> None:
        if model is not None and not isinstance(model, (str, os.PathLike)):
            raise FacemaskError(
                f"model must be a path to an .onnx or .engine file (or None), got {type(model).__name__}"
            )
        self._claim()  # closed until composed (the `Resource` lifecycle)
        self._timings = threading.local()
        self.config = PostprocessConfig(
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
            class_agnostic=class_agnostic,
        )
        self.closeup_check = _closeup_check(closeup_check, class_agnostic)
        kinds = {
            "preprocess": _stage_kind(preprocess, "preprocess"),
            "postprocess": _stage_kind(postprocess, "postprocess"),
        }
        self.model_path = default_model_path() if model is None else Path(model)
        self.backend = _resolve_backend(backend, self.model_path)
        if not self.model_path.exists():
            raise FileNotFoundError(f"model file not found: {self.model_path}")
        self._pipeline: Pipeline | None = None
        network = NETWORKS[self.backend](self.model_path, providers=providers, threads=threads, input_size=input_size)
        self._pipeline, self.stages = _compose(network, self.config, kinds)  # closes `network` if it fails
        self.spec: ModelSpec = network.spec
        self._closed = False

    @property
    def last_timing(self) -> dict[str, float]:
        """Stage timings of the calling thread's last call (empty before its first)."""
        return dict(getattr(self._timings, "value", {}))

    @last_timing.setter
    def last_timing(self, value: dict[str, float]) -> None:
        self._timings.value = value

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def batch_size(self) -> int | None:
        """The model's static batch size (None when its batch axis is dynamic); `detect_batch` chunks by it."""
        self._check_open()
        return self._pipeline.network.batch_size

    @property
    def providers(self) -> list[str]:
        """ONNX Runtime execution providers in use (empty for other backends or once closed)."""
        return [] if self._pipeline is None else list(self._pipeline.network.providers)

    def _release(self) -> None:
        """Free the stages (session or engine, device buffers)."""
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.backend
        return f"Detector({str(self.model_path)!r}, {self.spec.architecture}, {state})"

    def _label(self) -> str:
        return f"Detector ({self.model_path})"

    def stream(
        self,
        sources: str | int | Source | Sequence[str | int | Source],
        max_frames: int | None = None,
        timeout_s: float | None = None,
        track: bool = False,
        tracker_config: TrackerConfig | None = None,
    ) -> DetectionStream:
        """`(frame, detections)` for every frame of `sources` (a path, folder, glob, video, camera index,
        RTSP/HTTP URL, or a list of them), with running totals in `.totals` (`facemask_sdk.stream`).
        `max_frames` stops each video, camera or stream after that many frames: per source, as
        `detect --max-frames` (it used to be a total over all sources).
        `track=True` follows faces across frames and counts people (`facemask_sdk.tracking`)."""
        from facemask_sdk.sources import DEFAULT_TIMEOUT_S
        from facemask_sdk.stream import DetectionStream

        self._check_open()
        return DetectionStream(
            self,
            sources,
            max_frames,
            DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s,
            track=track,
            tracker_config=tracker_config,
        )

    def frame_buffer(self, height: int, width: int) -> np.ndarray:
        """A BGR uint8 `height x width x 3` array to capture frames into (`cap.read(frame)`).

        On TensorRT it is a view of page-locked memory: mapped into the GPU on Jetson, so the frame reaches
        the kernels without a copy, or uploaded with one async copy on a discrete GPU; on other backends it is
        an ordinary array (nothing to gain there).
        """
        self._check_open()
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise FacemaskError(f"frame_buffer {name} must be a whole number of pixels, got {value!r}")
        if height <= 0 or width <= 0:
            raise FacemaskError(f"frame_buffer needs a positive height and width, got {height}x{width}")
        return self._pipeline.frame_buffer(int(height), int(width))

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
            self.last_timing = _timing(0, 0.0, (0.0, 0.0, 0.0))
            return []
        load_s = time.perf_counter() - start
        results, stage_seconds = self._pipeline.detect(frames)
        totals = np.array(stage_seconds, dtype=np.float64)  # the close-up check's second pass adds to them
        checked = 0
        if self.closeup_check is not None:
            check = self.closeup_check

            def detect_shrunk(indices: list[int]) -> list[Detections]:
                nonlocal checked
                checked = len(indices)
                shrink_start = time.perf_counter()
                shrunk = shrink_frames([frames[i] for i in indices], check, self.spec.mean)
                totals[0] += time.perf_counter() - shrink_start  # the shrinking counts as pre-processing
                second, seconds = self._pipeline.detect(shrunk)
                totals[:] += seconds
                return second

            results = check_closeups(results, [frame.shape[:2] for frame in frames], detect_shrunk, check)
        self.last_timing = _timing(len(frames), load_s, totals.tolist(), checked)
        return results


def load_image(image: ImageInput, source: str = "image") -> np.ndarray:
    """A path (str or PathLike) is read from disk; an array is validated and converted to BGR uint8."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    return to_bgr8(image, source=source)


def _closeup_check(closeup_check: bool | CloseupCheck | None, class_agnostic: bool) -> CloseupCheck | None:
    """The check's settings, or None when it is off. It takes one class per face, so it needs one box per
    face (`class_agnostic`): by default it follows that setting."""
    if closeup_check is None:
        return DEFAULT_CLOSEUP_CHECK if class_agnostic else None
    if isinstance(closeup_check, CloseupCheck):
        settings = closeup_check
    elif isinstance(closeup_check, (bool, np.bool_)):
        settings = DEFAULT_CLOSEUP_CHECK if closeup_check else None
    else:
        raise FacemaskError(
            f"closeup_check must be True, False, None or a CloseupCheck, got {type(closeup_check).__name__}"
        )
    if settings is not None and not class_agnostic:
        raise FacemaskError(
            "the close-up check gives each face one class, so it needs class_agnostic=True; pass closeup_check=False"
        )
    return settings


def _timing(images: int, load_s: float, stage_seconds: Sequence[float], closeup_checks: int = 0) -> dict[str, float]:
    milliseconds = {"load_ms": load_s * 1e3, **{key: s * 1e3 for key, s in zip(STAGE_TIMINGS, stage_seconds)}}
    return {**milliseconds, "total_ms": sum(milliseconds.values()), "images": images, "closeup_checks": closeup_checks}


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
        raise FacemaskError(f"unknown backend {backend!r}; choose auto, onnxruntime, openvino or tensorrt")
    return BACKEND_ALIASES[name]


def _open_onnxruntime(path: Path, providers: Sequence[str] | None, threads: int | None, input_size: int | None = None):
    from facemask_sdk.backends.onnxrt import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, providers=providers, threads=threads, input_size=input_size)


def _open_tensorrt(path: Path, providers: Sequence[str] | None, threads: int | None, input_size: int | None = None):
    """TensorRT takes no providers or threads: one engine, one CUDA device, built for one input size."""
    try:
        from facemask_sdk.backends.tensorrt import TensorRTRunner

        runner = TensorRTRunner(path)
    except ImportError as exc:  # tensorrt / pycuda missing, at import or when the runner loads them
        missing = getattr(exc, "name", None) or str(exc)
        raise FacemaskError(
            f"{path} is a TensorRT engine, which needs TensorRT and pycuda on an NVIDIA GPU "
            f"(missing: {missing}); use the .onnx model on this machine instead"
        ) from None
    built = runner.spec.image_size[0]
    if input_size is not None and (input_size, input_size) != tuple(runner.spec.image_size):
        runner.close()
        raise FacemaskError(
            f"{path} was built for {built} px input; build an engine for {input_size} px with "
            f"`facemask-sdk build-engine --input-size {input_size}`"
        )
    return runner


def _open_openvino(path: Path, providers: Sequence[str] | None, threads: int | None, input_size: int | None = None):
    """OpenVINO on the CPU: providers do not apply; bf16 where the CPU has it natively."""
    from facemask_sdk.backends.openvino import OpenVinoRunner

    if providers:
        raise FacemaskError("providers are ONNX Runtime's; the OpenVINO backend runs on the CPU")
    return OpenVinoRunner(path, threads=threads, input_size=input_size)


NETWORKS = {"onnxruntime": _open_onnxruntime, "tensorrt": _open_tensorrt, "openvino": _open_openvino}
"""The network stage of each backend: `open(path, providers=, threads=, input_size=) -> Runner`."""

DEFAULT_KIND = {HOST: "numpy", DEVICE: "cuda"}
"""`"auto"` pre- and post-processing: on the network's own side, so nothing is copied across."""


def _stage_kind(kind: str, name: str) -> str:
    if kind == "auto" or kind in STAGE_KINDS:
        return kind
    raise FacemaskError(f"unknown {name} {kind!r}; choose auto, {' or '.join(STAGE_KINDS)}")


STAGE_IMPLEMENTATIONS = {
    "preprocess": {
        "numpy": lambda spec, config, kernels: NumpyPreprocess(spec),
        "cuda": lambda spec, config, kernels: CudaPreprocess(kernels),
    },
    "postprocess": {
        "numpy": lambda spec, config, kernels: NumpyPostprocess(spec, config),
        "cuda": lambda spec, config, kernels: CudaPostprocess(kernels),
    },
}
"""Each host/device stage's implementations: `make(spec, config, kernels)`."""


def _compose(network, config: PostprocessConfig, kinds: dict[str, str]) -> tuple[Pipeline, dict[str, str]]:
    """The pipeline of `network` with the chosen pre- and post-processing (and the kinds chosen), and
    the device buffers any device stage shares, created with the network's tensor dtypes on its GPU.
    If anything fails, what was built is closed, `network` included."""
    spec = network.spec
    kinds = {role: DEFAULT_KIND[network.side] if kind == "auto" else kind for role, kind in kinds.items()}
    kernels = None
    try:
        if network.side == DEVICE or "cuda" in kinds.values():
            from facemask_sdk.cuda.kernels import CudaKernels

            input_dtype, head_dtype = network.device_dtypes
            kernels = CudaKernels(
                spec, config, input_dtype=input_dtype, head_dtype=head_dtype, device=network.device_ordinal
            )
        if network.side == DEVICE:
            network.bind(kernels)
        pre = STAGE_IMPLEMENTATIONS["preprocess"][kinds["preprocess"]](spec, config, kernels)
        post = STAGE_IMPLEMENTATIONS["postprocess"][kinds["postprocess"]](spec, config, kernels)
        return Pipeline(pre, network, post, kernels), kinds
    except BaseException as exc:
        try:
            close_in_order(network, kernels)  # the engine before the buffers it points at
        except Exception:  # noqa: BLE001  (the original error is the one to report)
            pass
        raise exc
