"""TensorRT backend: `.engine` files as the network stage (`facemask_sdk.stages`), on the device.

`bind(kernels)` points the engine's input and outputs at the buffers of a `facemask_sdk.cuda.CudaKernels`;
`enqueue()` runs `execute_async_v3` on that kernels' stream. With the CUDA pre- and post-processing
stages over the same kernels a frame goes letterbox kernel -> engine -> decoding/top-K/NMS kernels with
no copy and one synchronisation (`Detector` composes exactly that for an `.engine`). The engine's JSON
sidecar (`facemask_sdk.engine_meta`) supplies the model settings and is checked against this machine's
TensorRT version and GPU first: engines are not portable, and a mismatch says how to rebuild. Output
roles come from the fixed names the export writes (`facemask_sdk.spec.OUTPUT_NAMES`), never guessed.

Threading model: a runner belongs to the thread that created it (one execution context); calling it
from another thread, or after `close()`, raises `FacemaskError`. For several threads create one
`Detector` per thread: runners of the same engine file share one deserialized engine and each gets
its own execution context, which is how TensorRT supports concurrency.

TensorRT 10 and 11 Python API only (`deserialize_cuda_engine`, `create_execution_context`,
`num_io_tensors`/`get_tensor_name`/`get_tensor_mode`/`get_tensor_dtype`/`get_tensor_shape`,
`set_input_shape`, `set_tensor_address`, `execute_async_v3`); `tensorrt` and `pycuda` are imported
only when a runner is created.

    >>> runner = TensorRTRunner("models/facemask.fp16.engine")            # doctest: +SKIP
    >>> kernels = CudaKernels(runner.spec, input_dtype=runner.input_dtype, head_dtype=runner.head_dtype)
    >>> runner.bind(kernels)
    >>> pipeline = Pipeline(CudaPreprocess(kernels), runner, CudaPostprocess(kernels), kernels)
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from facemask_sdk.backends.base import Runner
from facemask_sdk.engine_meta import check_compatible, read_sidecar
from facemask_sdk.errors import FacemaskError, InternalError, ModelFileError
from facemask_sdk.spec import INPUT_NAME, OUTPUT_NAMES, ModelSpec
from facemask_sdk.stages import DEVICE

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
    """A TensorRT engine, the network stage on the device: `bind(kernels)`, then `enqueue()` per frame.

    `input_dtype` / `head_dtype`: the engine's input and output dtypes, which the `CudaKernels` it is
    bound to must be created with. `device`: the CUDA device ordinal.
    """

    side = DEVICE

    def __init__(self, engine_path: str | os.PathLike, *, device: int = 0) -> None:
        self._claim()
        self.path = Path(engine_path)
        if not self.path.exists():
            raise FileNotFoundError(f"engine file not found: {self.path}")
        if not self.path.is_file():
            raise ModelFileError(f"engine path is not a file: {self.path}")
        self.sidecar = read_sidecar(self.path)
        self.spec = ModelSpec.from_dict(self.sidecar["spec"])
        self.batch_size = 1
        self.device_ordinal = int(device)
        self._kernels = None

        trt = import_tensorrt()
        from facemask_sdk.cuda.kernels import import_pycuda, primary_context

        cuda = import_pycuda()
        gpu = cuda.Device(int(device))
        major, minor = gpu.compute_capability()
        check_compatible(self.sidecar, trt.__version__, gpu.name(), f"{major}.{minor}", engine_path=self.path)

        self._cuda, self._primary = cuda, primary_context(cuda, int(device))
        self._primary.push()  # deserialising and creating the execution context use the primary context
        try:
            self._engine_key, engine = _acquire_engine(trt, self.path, int(device))
            self._engine = engine
            self._context = engine.create_execution_context()
            if self._context is None:
                raise FacemaskError(
                    f"TensorRT could not create an execution context for {self.path} (out of GPU memory?)"
                )
            self._names = self._bind_shapes(trt, engine)
        except BaseException:
            if hasattr(self, "_engine_key"):
                self._context = None
                _release_engine(self._engine_key)
            raise
        finally:
            cuda.Context.pop()
        self.input_dtype, self.head_dtype = self._dtypes["input"], self._dtypes["logits"]
        self.device_dtypes = (self.input_dtype, self.head_dtype)
        self._closed = False

    def _bind_shapes(self, trt, engine) -> dict[str, str]:
        """Check the engine's I/O against the spec, fix a dynamic batch to 1; role -> tensor name."""
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        roles = io_roles(inputs, outputs, self.path)
        height, width = self.spec.image_size
        shape = tuple(engine.get_tensor_shape(roles["input"]))
        # -1: a dynamic axis (batch; height and width of a --dynamic-size export, built for one size)
        if (
            len(shape) != 4
            or shape[1] != 3
            or any(d not in (-1, e) for d, e in zip(shape[::2][:1] + shape[2:], (1, height, width)))
        ):
            raise ModelFileError(
                f"{self.path}: input {roles['input']!r} has shape {shape}, expected (1, 3, {height}, {width})"
            )
        if -1 in shape and not self._context.set_input_shape(roles["input"], (1, 3, height, width)):
            raise ModelFileError(
                f"{self.path}: its optimisation profile does not allow one {height}x{width} image (the size in its sidecar)"
            )

        from facemask_sdk.anchors import generate_anchors

        anchors, classes = len(generate_anchors(self.spec)), self.spec.num_classes
        expected = {"logits": (anchors, classes), "box_codes": (anchors, 4)}
        for role in ("logits", "box_codes"):
            found = tuple(self._context.get_tensor_shape(roles[role]))
            if found not in (expected[role], (1, *expected[role])):
                rows, cols = expected[role]
                raise ModelFileError(
                    f"{self.path}: output {roles[role]!r} has shape {found}, expected (1, {rows}, {cols})"
                )
        self._dtypes = {role: np.dtype(trt.nptype(engine.get_tensor_dtype(name))) for role, name in roles.items()}
        if self._dtypes["logits"] != self._dtypes["box_codes"]:
            raise ModelFileError(f"{self.path}: logits and boxes have different dtypes {self._dtypes}")
        return roles

    # -- lifecycle (closed, close, with, the owner-thread check: `Resource`) ----------------------------

    owner_thread_only = True
    thread_hint = "create one Detector per thread (runners of one engine file share the engine)"

    def _release(self) -> None:
        """Free the execution context and (with the last runner) the engine; the bound kernels stay."""
        self._primary.push()
        try:
            if self._kernels is not None and not self._kernels.closed:
                self._kernels.synchronize()
            self._context = None
            self._engine = None
            _release_engine(self._engine_key)
        finally:
            self._cuda.Context.pop()
            self._kernels = None

    # -- the network stage ----------------------------------------------------------------------------

    def bind(self, kernels) -> None:
        """Point the engine's input and outputs at `kernels`'s buffers (a `CudaKernels` created with
        this runner's `input_dtype` and `head_dtype`)."""
        self._check_open()
        if kernels.ordinal != self.device_ordinal:
            raise InternalError(
                f"{self.path} is loaded on GPU {self.device_ordinal}, the buffers are on GPU {kernels.ordinal}"
            )
        if (kernels.input_dtype, kernels.head_dtype) != (self.input_dtype, self.head_dtype):
            raise InternalError(
                f"{self.path} has {self.input_dtype} input and {self.head_dtype} outputs, the kernels' buffers "
                f"{kernels.input_dtype} and {kernels.head_dtype}"
            )
        addresses = {"input": kernels.input_ptr, "logits": kernels.logits_ptr, "box_codes": kernels.box_codes_ptr}
        with kernels.active():
            for role, name in self._names.items():
                if not self._context.set_tensor_address(name, addresses[role]):
                    raise InternalError(f"TensorRT refused the address of tensor {name!r}")
        self._kernels = kernels

    def enqueue(self) -> None:
        """Run the engine on the bound kernels' stream: its input buffer -> its head buffers."""
        self._check_open()
        kernels = self._kernels
        if kernels is None:
            raise InternalError(f"{self.path}: bind(kernels) before enqueue()")
        with kernels.active():
            if not self._context.execute_async_v3(stream_handle=kernels.stream.handle):
                raise InternalError(f"TensorRT could not enqueue {self.path} (see its log above)")

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The bare network on one pre-processed image `[1, 3, H, W]` -> float32 logits `[1, A, C]`,
        boxes `[1, A, 4]` (like `OnnxRuntimeRunner.run`), for parity checks against other backends."""
        self._check_open()
        if self._kernels is None:
            raise InternalError(f"{self.path}: bind(kernels) before run()")
        self._kernels.upload_input(batch)
        self.enqueue()
        logits, box_codes = self._kernels.download_head()
        return logits[None], box_codes[None]


def io_roles(inputs: list[str], outputs: list[str], path: Path) -> dict[str, str]:
    """Role -> tensor name, from the fixed names `facemask-sdk export` writes (`INPUT_NAME`, `OUTPUT_NAMES`)."""
    logits, boxes = OUTPUT_NAMES
    if inputs != [INPUT_NAME] or sorted(outputs) != sorted(OUTPUT_NAMES):
        raise ModelFileError(
            f"{path}: expected input {INPUT_NAME!r} and outputs {logits!r}, {boxes!r} (the names facemask-sdk "
            f"export writes), found {inputs} -> {outputs}; rebuild the engine from the exported ONNX"
        )
    return {"input": INPUT_NAME, "logits": logits, "box_codes": boxes}
