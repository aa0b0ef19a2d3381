"""TensorRT backend: `.engine` files, with pre-processing, decoding and NMS on the GPU too.

One `infer(frame)` enqueues, on one CUDA stream: the letterbox kernel writing straight into the
engine's input tensor, `execute_async_v3`, then the decoding/top-K/NMS kernels reading the engine's
output tensors and writing detections into mapped host memory; one synchronisation at the end
(`facemask_sdk.cuda.CudaPipeline` holds the kernels and buffers). The engine's JSON sidecar
(`facemask_sdk.engine_meta`) supplies the model settings and is checked against this machine's
TensorRT version and GPU first: engines are not portable, and a mismatch says how to rebuild.

Threading model: a runner belongs to the thread that created it (one execution context, one stream,
one set of buffers); calling it from another thread, or after `close()`, raises `FacemaskError`. For
several threads create one runner per thread: runners of the same engine file share one deserialized
engine and each gets its own execution context, which is how TensorRT supports concurrency.

TensorRT 10 and 11 Python API only (`deserialize_cuda_engine`, `create_execution_context`,
`num_io_tensors`/`get_tensor_name`/`get_tensor_mode`/`get_tensor_dtype`/`get_tensor_shape`,
`set_input_shape`, `set_tensor_address`, `execute_async_v3`); `tensorrt` and `pycuda` are imported
only when a runner is created.

    >>> with TensorRTRunner("models/facemask.fp16.engine") as runner:   # doctest: +SKIP
    ...     frame = runner.frame_buffer(1080, 1920)     # capture straight into mapped memory
    ...     ok, _ = cap.read(frame)
    ...     detections = runner.infer(frame)
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from facemask_sdk.engine_meta import check_compatible, read_sidecar
from facemask_sdk.backends.base import Runner
from facemask_sdk.errors import FacemaskError, InternalError, ModelFileError
from facemask_sdk.spec import ModelSpec

_LOGGER: Any = None  # TensorRT's logger is a process-wide singleton: create it once
_ENGINES: dict[tuple, list] = {}  # (real path, mtime, size, device) -> [runtime, engine, users]
_ENGINES_LOCK = threading.Lock()


MIN_TENSORRT_MAJOR = 10
"""TensorRT 10 (JetPack 6.1+) and 11: explicit batch, strongly typed networks, `set_tensor_address`."""


def check_tensorrt_version(version: str) -> None:
    """Refuse a TensorRT older than 10 (JetPack 6.0 ships 8.6) in one line naming both versions."""
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise FacemaskError(f"cannot read the TensorRT version {version!r}") from None
    if major < MIN_TENSORRT_MAJOR:
        raise FacemaskError(
            f"TensorRT {version} is installed here, but facemask-sdk needs TensorRT {MIN_TENSORRT_MAJOR} or 11 "
            f"(on Jetson: JetPack 6.1 or newer)"
        )


class TensorRTNotInstalled(FacemaskError):
    """The `tensorrt` package is missing here (the builder turns this into "build on the device")."""


def import_tensorrt():
    """The `tensorrt` module (10 or 11), or a `FacemaskError` saying what to install or use instead;
    the one import of TensorRT, used by the runtime and the engine builder alike."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTNotInstalled(
            "TensorRT is not installed: .engine files need the 'tensorrt' Python package on an NVIDIA GPU "
            "(JetPack ships it; on x86 `pip install tensorrt`); use the .onnx model on this machine instead"
        ) from None
    check_tensorrt_version(trt.__version__)
    return trt


def _acquire_engine(trt, path: Path, device: int):
    """The deserialized engine of `path`, shared by every runner of it (reference counted)."""
    global _LOGGER
    stat = path.stat()
    key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size, device)  # a rebuilt file is a new engine
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            if _LOGGER is None:
                _LOGGER = trt.Logger(trt.Logger.WARNING)
            runtime = trt.Runtime(_LOGGER)
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise ModelFileError(
                    f"TensorRT could not load {path} (see its log above): corrupt, or built by another "
                    f"TensorRT version or for another GPU; rebuild it with `facemask-sdk build-engine`"
                )
            _ENGINES[key] = [runtime, engine, 0]
        _ENGINES[key][2] += 1
        return key, _ENGINES[key][1]


def _release_engine(key: tuple) -> None:
    with _ENGINES_LOCK:
        entry = _ENGINES.get(key)
        if entry is not None:
            entry[2] -= 1
            if entry[2] <= 0:
                del _ENGINES[key]


class TensorRTRunner(Runner):
    """A TensorRT engine plus the CUDA pre/post-processing pipeline: `infer(frame) -> Detections`.

    `config`: a `PostprocessConfig` (thresholds, top_k, max_detections; default if None). `mapped`:
    zero-copy mapped host memory for frames and detections (True), explicit async copies (False), or
    None: mapped on an integrated GPU (Jetson), copies on a discrete one (`use_mapped_memory`). After
    each `infer` `last_timing` holds GPU times (CUDA events) of the three stages.
    """

    def __init__(
        self,
        engine_path: str | os.PathLike,
        config: Any = None,
        *,
        mapped: bool | None = None,
        device: int = 0,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        self._claim()
        self.path = Path(engine_path)
        if not self.path.exists():
            raise FileNotFoundError(f"engine file not found: {self.path}")
        if not self.path.is_file():
            raise ModelFileError(f"engine path is not a file: {self.path}")
        self.sidecar = read_sidecar(self.path)
        self.spec = ModelSpec.from_dict(self.sidecar["spec"])
        if config is None:
            from facemask_sdk.postprocess import PostprocessConfig

            config = PostprocessConfig()
        self.config = config
        self.last_timing: dict[str, float] = {}

        trt = import_tensorrt()
        from facemask_sdk.cuda.pipeline import CudaPipeline, import_pycuda, primary_context

        cuda = import_pycuda()
        gpu = cuda.Device(int(device))
        major, minor = gpu.compute_capability()
        check_compatible(self.sidecar, trt.__version__, gpu.name(), f"{major}.{minor}", engine_path=self.path)

        context = primary_context(cuda, int(device))
        context.push()  # deserialising and creating the execution context use the primary context
        try:
            self._engine_key, engine = _acquire_engine(trt, self.path, int(device))
            self._engine = engine
            self._context = engine.create_execution_context()
            if self._context is None:
                raise FacemaskError(
                    f"TensorRT could not create an execution context for {self.path} (out of GPU memory?)"
                )
            names = self._bind_shapes(trt, engine)
        except BaseException:
            if hasattr(self, "_engine_key"):
                self._context = None
                _release_engine(self._engine_key)
            raise
        finally:
            cuda.Context.pop()

        self._pipeline = None
        try:
            self._pipeline = CudaPipeline(
                self.spec, config, input_dtype=self._dtypes["input"], head_dtype=self._dtypes["logits"],
                mapped=mapped, device=int(device), cache_dir=cache_dir,
            )
            addresses = {"input": self._pipeline.input_ptr, "logits": self._pipeline.logits_ptr,
                         "regressions": self._pipeline.regressions_ptr}
            with self._pipeline.active():
                for role, name in names.items():
                    if not self._context.set_tensor_address(name, addresses[role]):
                        raise InternalError(f"TensorRT refused the address of tensor {name!r}")
                self._events = [cuda.Event() for _ in range(4)]
        except BaseException:  # free what was built, then report the original error
            self._context = self._engine = None
            _release_engine(self._engine_key)
            if self._pipeline is not None:
                self._pipeline.close()
            raise
        self._closed = False

    def _bind_shapes(self, trt, engine) -> dict[str, str]:
        """Check the engine's I/O against the spec, fix a dynamic batch to 1; role -> tensor name."""
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 2:
            raise ModelFileError(
                f"{self.path}: expected 1 input and 2 outputs (logits, boxes), found {inputs} -> {outputs}"
            )
        height, width = self.spec.image_size
        shape = tuple(engine.get_tensor_shape(inputs[0]))
        if len(shape) != 4 or shape[1:] != (3, height, width) or shape[0] not in (1, -1):
            raise ModelFileError(
                f"{self.path}: input {inputs[0]!r} has shape {shape}, expected (1, 3, {height}, {width})"
            )
        if shape[0] == -1 and not self._context.set_input_shape(inputs[0], (1, 3, height, width)):
            raise ModelFileError(f"{self.path}: its optimisation profile does not allow batch 1")

        from facemask_sdk.anchors import generate_anchors

        anchors, classes = len(generate_anchors(self.spec)), self.spec.num_classes
        shapes = [tuple(self._context.get_tensor_shape(name)) for name in outputs]
        roles = {"input": inputs[0], **_output_roles(outputs, shapes, classes)}
        expected = {"logits": (anchors, classes), "regressions": (anchors, 4)}
        for role in ("logits", "regressions"):
            found = tuple(self._context.get_tensor_shape(roles[role]))
            if found not in (expected[role], (1, *expected[role])):
                rows, cols = expected[role]
                raise ModelFileError(
                    f"{self.path}: output {roles[role]!r} has shape {found}, expected (1, {rows}, {cols})"
                )
        self._dtypes = {role: np.dtype(trt.nptype(engine.get_tensor_dtype(name))) for role, name in roles.items()}
        if self._dtypes["logits"] != self._dtypes["regressions"]:
            raise ModelFileError(f"{self.path}: logits and boxes have different dtypes {self._dtypes}")
        return roles

    # -- lifecycle (closed, close, with, the owner-thread check: `Runner`) ------------------------------

    owner_thread_only = True
    thread_hint = "create one runner per thread (runners of one engine file share the engine)"

    def _release(self) -> None:
        """Free the execution context, the buffers and (with the last runner) the engine."""
        with self._pipeline.active():
            self._pipeline.synchronize()
            self._context = None
            self._engine = None
            _release_engine(self._engine_key)
        self._pipeline.close()

    # -- inference ------------------------------------------------------------------------------------

    def frame_buffer(self, height: int, width: int) -> np.ndarray:
        """A BGR uint8 `[height, width, 3]` view of pinned memory (mapped into the GPU on Jetson); `infer`
        reads it in place."""
        self._check_open()
        return self._pipeline.frame_buffer(height, width)

    def infer(self, image_bgr: np.ndarray):
        """Detections in one BGR uint8 HxWx3 frame (original-image pixels), best first."""
        from facemask_sdk.detections import Detections

        self._check_open()
        pipeline, start, pre, net, post = self._pipeline, *self._events
        with pipeline.active():
            start.record(pipeline.stream)
            box = pipeline.preprocess(image_bgr)
            pre.record(pipeline.stream)
            self._execute()
            net.record(pipeline.stream)
            pipeline.decode_nms(box)
            post.record(pipeline.stream)
            pipeline.synchronize()
            self.last_timing = {
                "preprocess_ms": pre.time_since(start),
                "inference_ms": net.time_since(pre),
                "postprocess_ms": post.time_since(net),
                "total_ms": post.time_since(start),
            }
        boxes, scores, class_ids = pipeline.results()
        return Detections(boxes, scores, class_ids, self.spec.classes)

    __call__ = infer

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The bare network on one pre-processed image `[1, 3, H, W]` -> float32 logits `[1, A, C]`,
        boxes `[1, A, 4]` (like `OnnxRuntimeRunner.run`), for parity checks against other backends."""
        self._check_open()
        with self._pipeline.active():
            self._pipeline.upload_input(batch)
            self._execute()
            logits, regressions = self._pipeline.download_head()
        return logits[None], regressions[None]

    def _execute(self) -> None:
        if not self._context.execute_async_v3(stream_handle=self._pipeline.stream.handle):
            raise InternalError(f"TensorRT could not enqueue {self.path} (see its log above)")


def _output_roles(names: list[str], shapes: list[tuple[int, ...]], num_classes: int) -> dict[str, str]:
    """Which output is the logits and which the box regressions: by name, else by the last dimension."""
    by_name = {}
    for name in names:
        lowered = name.lower()
        if any(word in lowered for word in ("logit", "class", "cls", "score")):
            by_name.setdefault("logits", name)
        elif any(word in lowered for word in ("box", "reg", "bbox")):
            by_name.setdefault("regressions", name)
    if len(by_name) == 2:
        return by_name
    if num_classes != 4:
        by_dim = {("logits" if shape[-1] == num_classes else "regressions"): name for name, shape in zip(names, shapes)}
        if len(by_dim) == 2 and all(shape[-1] in (num_classes, 4) for shape in shapes):
            return by_dim
    raise ModelFileError(f"cannot tell the logits from the boxes among outputs {dict(zip(names, shapes))}")
