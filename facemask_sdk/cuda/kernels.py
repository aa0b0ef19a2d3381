"""GPU pre-processing, decoding, top-K and NMS (`kernels.cu`) on one CUDA stream, driven by pycuda.

The launch plans (`facemask_sdk.cuda.plans`: pure Python, checked on CPU against an emulator of the
kernels) say what to launch; `CudaKernels` compiles the kernels (cached on disk), allocates every
buffer once, and enqueues pre-processing and decoding + NMS on its stream. The TensorRT runner points
the engine's input and outputs at the kernels' buffers, so a frame goes camera -> GPU -> detections
with one synchronisation at the end.

Zero copy: frames and detections live in page-locked host memory mapped into the device address space
(`pagelocked_empty(..., mem_flags=host_alloc_flags.DEVICEMAP)` and `.base.get_device_pointer()`). On
Jetson (memory shared by CPU and GPU) that is no copy at all; on a discrete GPU the kernels would read
the frame over PCIe, so there explicit async copies to device buffers are used instead. `mapped=None`
(the default) picks by the device's `INTEGRATED` attribute (`use_mapped_memory`).

    >>> with CudaKernels(spec) as gpu:                      # doctest: +SKIP
    ...     frame = gpu.frame_buffer(1080, 1920)              # cap.read(frame) fills it in place
    ...     letterbox = gpu.preprocess(frame)                       # -> gpu.input_ptr, [3, H, W]
    ...     # TensorRT writes the head outputs into gpu.logits_ptr / gpu.box_codes_ptr
    ...     gpu.decode_nms(letterbox); gpu.synchronize()
    ...     boxes, scores, class_ids = gpu.results()

Threading: a CudaKernels belongs to the thread that created it (its CUDA stream and buffers are not
shared); use from another thread, or after `close()`, raises `FacemaskError`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np

from facemask_sdk.cuda.plans import (
    KERNEL_ARGS,
    KERNEL_SOURCE,
    NVCC_OPTIONS,
    DecodeSettings,
    Launch,
    check_frame,
    decode_buffer_specs,
    io_dtype,
    output_specs,
    plan_decode,
    plan_letterbox,
)
from facemask_sdk.errors import FacemaskError
from facemask_sdk.lifecycle import Resource
from facemask_sdk.preprocess import Letterbox
from facemask_sdk.spec import ModelSpec


def find_nvcc() -> str:
    """nvcc on PATH, else the CUDA toolkit's default place (JetPack does not put it on PATH)."""
    toolkit = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    for candidate in (shutil.which("nvcc"), os.path.join(toolkit, "bin", "nvcc")):
        if candidate and os.path.isfile(candidate):
            return candidate
    raise FacemaskError(
        "the CUDA kernels are compiled at first use and need nvcc (CUDA toolkit): add /usr/local/cuda/bin "
        "to PATH or set CUDA_HOME"
    )


def default_cache_dir() -> Path:
    """Where compiled kernels are cached: $FACEMASK_SDK_CACHE/cuda or ~/.cache/facemask_sdk/cuda."""
    root = os.environ.get("FACEMASK_SDK_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "facemask_sdk")
    return Path(root) / "cuda"


# --------------------------------------------------------------------------------------------------
# pycuda side
# --------------------------------------------------------------------------------------------------

_CONTEXTS: dict[int, Any] = {}
_CONTEXTS_LOCK = threading.Lock()


def import_pycuda():
    """`pycuda.driver`, initialised, or a `FacemaskError` that says how to get it."""
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise FacemaskError(
            "the CUDA stages need pycuda and an NVIDIA GPU with its driver: pip install 'facemask-sdk[trt]'"
        ) from None
    cuda.init()
    return cuda


def primary_context(cuda, ordinal: int):
    """The device's primary context, retained once per process: the one TensorRT (CUDA runtime) uses."""
    with _CONTEXTS_LOCK:
        if ordinal not in _CONTEXTS:
            if not 0 <= ordinal < cuda.Device.count():
                raise FacemaskError(f"no CUDA device {ordinal}: this machine has {cuda.Device.count()}")
            _CONTEXTS[ordinal] = cuda.Device(ordinal).retain_primary_context()
        return _CONTEXTS[ordinal]


def use_mapped_memory(
    requested: bool | None, integrated: bool, can_map_host_memory: bool, device_name: str = "GPU"
) -> bool:
    """Zero-copy mapped host memory or explicit copies. Mapped memory is the fast path on an integrated,
    I/O-coherent GPU (Jetson: one physical memory); on a discrete GPU every kernel read of it crosses
    PCIe, so `None` picks copies there. An explicit request wins, if the device can honour it."""
    if requested is None:
        return integrated and can_map_host_memory
    if requested and not can_map_host_memory:
        raise FacemaskError(f"{device_name} cannot map host memory; use mapped=False")
    return bool(requested)


class CudaKernels(Resource):
    """Pre-processing and decoding + NMS kernels for one model, one stream, buffers allocated once.

    `config`: a `PostprocessConfig` (default thresholds if None); `input_dtype`: the network input
    (float32 or float16); `head_dtype`: the dtype of the logits/box_codes tensors; `mapped`: zero-copy
    mapped host memory for frames and detections (False: pinned buffers and explicit async copies;
    None: mapped on an integrated GPU such as Jetson's, copies on a discrete one).
    """

    def __init__(
        self,
        spec: ModelSpec,
        config: Any = None,
        *,
        input_dtype: Any = np.float32,
        head_dtype: Any = np.float32,
        mapped: bool | None = None,
        device: int = 0,
        cache_dir: str | Path | None = None,
    ) -> None:
        self._claim()  # closed until built enough for close() to free it (the `Resource` lifecycle)
        self._allocations: list[Any] = []
        if config is None:
            from facemask_sdk.postprocess import PostprocessConfig

            config = PostprocessConfig()
        from facemask_sdk.anchors import generate_anchors

        self.spec, self.config = spec, config
        self.settings = DecodeSettings.from_config(config)
        self.input_dtype, self.head_dtype = io_dtype(input_dtype), io_dtype(head_dtype)
        anchors = np.ascontiguousarray(generate_anchors(spec), dtype=np.float32)
        self.num_anchors, self.num_classes = anchors.shape[0], spec.num_classes
        self._cuda = cuda = import_pycuda()
        self.ordinal = int(device)
        self._context = primary_context(cuda, self.ordinal)
        self.cuda_device = cuda.Device(self.ordinal)
        attribute = cuda.device_attribute
        self.mapped = use_mapped_memory(
            mapped,
            bool(self.cuda_device.get_attribute(attribute.INTEGRATED)),
            bool(self.cuda_device.get_attribute(attribute.CAN_MAP_HOST_MEMORY)),
            self.cuda_device.name(),
        )
        self._closed = False
        try:
            with self.active():
                self._build(anchors, Path(cache_dir) if cache_dir else default_cache_dir())
        except BaseException:  # free what was allocated, then report the original error
            self.close()
            raise

    # -- construction --------------------------------------------------------------------------------

    def _build(self, anchors: np.ndarray, cache_dir: Path) -> None:
        from pycuda.compiler import SourceModule

        cuda = self._cuda
        cache_dir.mkdir(parents=True, exist_ok=True)  # pycuda only creates its default cache directory
        module = SourceModule(
            KERNEL_SOURCE.read_text(),
            nvcc=find_nvcc(),
            options=list(NVCC_OPTIONS),
            no_extern_c=True,
            cache_dir=str(cache_dir),
        )
        self._module = module
        self._functions = {name: module.get_function(name).prepare(fmt) for name, fmt in KERNEL_ARGS.items()}
        self.stream = cuda.Stream()
        self._events = [cuda.Event() for _ in range(4)]  # stage boundaries (`mark`, `stage_ms`)
        height, width = self.spec.image_size
        self._ptr: dict[str, int] = {
            "input": self._alloc(3 * height * width * self.input_dtype.itemsize),
            "logits": self._alloc(self.num_anchors * self.num_classes * self.head_dtype.itemsize),
            "box_codes": self._alloc(self.num_anchors * 4 * self.head_dtype.itemsize),
            "anchors": self._alloc(anchors.nbytes),
        }
        cuda.memcpy_htod(self._ptr["anchors"], anchors)
        for name, (dtype, count) in decode_buffer_specs(self.num_anchors, self.num_classes, self.settings).items():
            self._ptr[name] = self._alloc(count * dtype.itemsize)
        self._out: dict[str, np.ndarray] = {}
        for name, (dtype, shape) in output_specs(self.settings.max_detections).items():
            host = self._pinned(shape, dtype)
            self._out[name] = host
            self._ptr[name] = host.base.get_device_pointer() if self.mapped else self._alloc(host.nbytes)
        self._frames: dict[tuple[int, int], np.ndarray] = {}  # frame_buffer() memory, by (height, width)
        self._staging: dict[tuple[int, int], np.ndarray] = {}  # copies of frames that are not ours
        self._frame_dev: tuple[int, int] = (0, 0)  # (device pointer, bytes), mapped=False only
        self._pending = False

    def _alloc(self, nbytes: int) -> int:
        allocation = self._cuda.mem_alloc(max(int(nbytes), 1))
        self._allocations.append(allocation)
        return int(allocation)

    def _pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        flags = self._cuda.host_alloc_flags.DEVICEMAP if self.mapped else 0
        array = self._cuda.pagelocked_empty(shape, dtype, mem_flags=flags)
        self._allocations.append(array.base)
        return array

    # -- lifecycle ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def active(self):
        """Check the caller, make the device's primary context current, pop it afterwards (nests)."""
        self._check_open()
        self._context.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    owner_thread_only = True

    def _release(self) -> None:
        """Wait for queued work, free every buffer (frame_buffer() views die too)."""
        with self.active():
            if getattr(self, "stream", None) is not None:
                self.stream.synchronize()
            for allocation in reversed(self._allocations):
                allocation.free()
            self._allocations.clear()
            self._functions, self._module, self.stream = {}, None, None

    # -- device addresses, for TensorRT ----------------------------------------------------------------

    @property
    def pointers(self) -> dict[str, int]:
        """Device address of every buffer, by the names `plan_decode` uses (plus "input")."""
        return dict(self._ptr)

    @property
    def input_ptr(self) -> int:
        return self._ptr["input"]

    @property
    def logits_ptr(self) -> int:
        return self._ptr["logits"]

    @property
    def box_codes_ptr(self) -> int:
        return self._ptr["box_codes"]

    def device_name(self) -> str:
        return self.cuda_device.name()

    def compute_capability(self) -> str:
        major, minor = self.cuda_device.compute_capability()
        return f"{major}.{minor}"

    # -- frames ---------------------------------------------------------------------------------------

    def frame_buffer(self, height: int, width: int) -> np.ndarray:
        """A `[height, width, 3]` uint8 view of pinned (mapped) memory; frames in it reach the GPU with
        no host copy. The same size gives the same buffer; views stay valid until `close()`. Do not
        write into it while a `preprocess()` of it is still queued (call `synchronize()` first)."""
        with self.active():
            height, width = int(height), int(width)
            if height <= 0 or width <= 0:
                raise FacemaskError(f"frame size must be positive, got {height}x{width}")
            if (height, width) not in self._frames:
                self._frames[(height, width)] = self._pinned((height, width, 3), np.uint8)
            return self._frames[(height, width)]

    def _owning_buffer(self, frame: np.ndarray) -> np.ndarray | None:
        start = frame.__array_interface__["data"][0]
        end = start + frame.strides[0] * (frame.shape[0] - 1) + 3 * frame.shape[1]
        if frame.strides[1:] != (3, 1) or frame.strides[0] < 3 * frame.shape[1]:
            return None
        for buffer in self._frames.values():
            base = buffer.__array_interface__["data"][0]
            if base <= start and end <= base + buffer.nbytes:
                return buffer
        return None

    def preprocess(self, frame: np.ndarray) -> Letterbox:
        """Enqueue letterbox + normalisation of a BGR uint8 frame into the input tensor (`input_ptr`).

        A frame inside a `frame_buffer()` (or a crop of one) is read in place; any other array is first
        copied into a pinned staging buffer. Returns the letterbox geometry; nothing is synchronised."""
        frame = check_frame(frame)
        with self.active():
            buffer = self._owning_buffer(frame)
            if buffer is None:
                key = frame.shape[:2]
                if self._pending:
                    self.stream.synchronize()  # the staging buffer may still be read by queued work
                if key not in self._staging:
                    self._staging[key] = self._pinned((*key, 3), np.uint8)
                buffer = self._staging[key]
                np.copyto(buffer, frame)
                frame = buffer
            host_ptr = frame.__array_interface__["data"][0]
            offset = host_ptr - buffer.__array_interface__["data"][0]
            if self.mapped:
                src = buffer.base.get_device_pointer() + offset
            else:
                nbytes = frame.strides[0] * (frame.shape[0] - 1) + 3 * frame.shape[1]
                span = buffer.reshape(-1)[offset : offset + nbytes]
                src = self._device_frame(span.nbytes)
                self._cuda.memcpy_htod_async(src, span, self.stream)
            launch, letterbox = plan_letterbox(
                src, frame.shape[:2], frame.strides[0], self.input_ptr, self.input_dtype, self.spec
            )
            self.launch(launch)
            return letterbox

    def _device_frame(self, nbytes: int) -> int:
        ptr, size = self._frame_dev
        if nbytes > size:
            if self._pending:
                self.stream.synchronize()
            ptr, size = self._alloc(nbytes), nbytes  # the smaller one stays allocated until close()
            self._frame_dev = (ptr, size)
        return ptr

    # -- decoding ------------------------------------------------------------------------------------

    def decode_nms(self, letterbox: Letterbox) -> None:
        """Enqueue decoding, top-K and NMS of the head outputs at `logits_ptr`/`box_codes_ptr`."""
        with self.active():
            plan = plan_decode(self._ptr, self.num_anchors, self.num_classes, letterbox, self.settings, self.head_dtype)
            for launch in plan:
                self.launch(launch)
            if not self.mapped:
                for name, host in self._out.items():
                    self._cuda.memcpy_dtoh_async(host, self._ptr[name], self.stream)

    def launch(self, launch: Launch) -> None:
        """Enqueue one planned launch on the stream (call inside `active()`)."""
        self._functions[launch.kernel].prepared_async_call(launch.grid, launch.block, self.stream, *launch.args)
        self._pending = True

    def synchronize(self) -> None:
        with self.active():
            self.stream.synchronize()
            self._pending = False

    def results(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes float32 [N, 4] original pixels, scores float32 [N], class ids int64 [N]), best first;
        valid after `synchronize()`. Copies, so the next frame does not overwrite them."""
        self._check_open()
        if self._pending:
            raise FacemaskError("results() before synchronize(): the GPU may still be writing them")
        n = int(self._out["out_count"][0])
        return (
            self._out["out_boxes"][:n].copy(),
            self._out["out_scores"][:n].copy(),
            self._out["out_classes"][:n].astype(np.int64),
        )

    # -- stage timing: CUDA events on the stream ----------------------------------------------------

    def mark(self, index: int) -> None:
        """Record event `index` (0-3) on the stream: the boundaries of pre-processing, network, decoding."""
        with self.active():
            self._events[index].record(self.stream)

    def stage_ms(self) -> tuple[float, float, float]:
        """GPU milliseconds between marks 0-1, 1-2 and 2-3 (after `synchronize()`)."""
        with self.active():  # cuEventElapsedTime needs a current context
            start, pre, net, post = self._events
            return pre.time_since(start), net.time_since(pre), post.time_since(net)

    # -- host tensors in and out: where a neighbouring stage runs on the host -------------------------

    def upload_input(self, tensor: np.ndarray) -> None:
        """Copy a pre-processed `[3, H, W]` (or `[1, 3, H, W]`) host tensor into the input buffer."""
        expected = (3, *self.spec.image_size)
        tensor = np.asarray(tensor)
        if tensor.shape not in (expected, (1, *expected)):
            raise FacemaskError(f"input must have shape {list(expected)}, got {list(tensor.shape)}")
        with self.active():  # a pageable host array: a synchronous copy after the queued work
            self.stream.synchronize()
            self._pending = False
            self._cuda.memcpy_htod(self.input_ptr, np.ascontiguousarray(tensor.reshape(expected), self.input_dtype))

    def download_input(self) -> np.ndarray:
        """The input tensor `[3, H, W]` in the buffer's dtype, a new array (synchronises first)."""
        out = np.empty((3, *self.spec.image_size), self.input_dtype)
        with self.active():
            self.stream.synchronize()
            self._pending = False
            self._cuda.memcpy_dtoh(out, self.input_ptr)
        return out

    def upload_head(self, logits: np.ndarray, box_codes: np.ndarray) -> None:
        """Copy one image's head outputs (`[A, C]`, `[A, 4]`, any float dtype) into the head buffers."""
        expected = {"logits": (self.num_anchors, self.num_classes), "box_codes": (self.num_anchors, 4)}
        arrays = {"logits": np.asarray(logits), "box_codes": np.asarray(box_codes)}
        for name, array in arrays.items():
            if array.shape != expected[name]:
                raise FacemaskError(f"{name} must have shape {list(expected[name])}, got {list(array.shape)}")
        with self.active():  # pageable host arrays: synchronous copies after the queued work
            self.stream.synchronize()
            self._pending = False
            for name, array in arrays.items():
                self._cuda.memcpy_htod(self._ptr[name], np.ascontiguousarray(array, self.head_dtype))

    def download_head(self) -> tuple[np.ndarray, np.ndarray]:
        """The head outputs `[A, C]`, `[A, 4]` as float32 (synchronises first)."""
        logits = np.empty((self.num_anchors, self.num_classes), self.head_dtype)
        box_codes = np.empty((self.num_anchors, 4), self.head_dtype)
        with self.active():
            self.stream.synchronize()
            self._pending = False
            self._cuda.memcpy_dtoh(logits, self.logits_ptr)
            self._cuda.memcpy_dtoh(box_codes, self.box_codes_ptr)
        return logits.astype(np.float32), box_codes.astype(np.float32)
