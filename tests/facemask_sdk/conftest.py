"""Fixtures shared by the SDK's tests: the CPU emulator of the CUDA kernels, a stand-in pycuda that runs
on it and a stand-in tensorrt on that (`emulator`, `fake_cuda`, `fake_tensorrt`, `fake_engine`: the kernel,
CUDA kernels, TensorRT backend and stage-combination tests), NumPy references for
their head outputs and detections, and hand-made VOC folders (the VOC reader and `data-info` tests).

The emulator compiles `kernels.cu` as C++ with a small shim (`EMULATOR_SHIM`): each block's threads are
fibers (ucontext) switched at `__syncthreads()`, `__shared__` is `static`, atomics are plain (fibers never
run concurrently); tests/facemask_sdk/cuda/test_kernels.py says what it checks and what it cannot.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemask_sdk.cuda.plans import KERNEL_ARGS, KERNEL_DEFINES, KERNEL_SOURCE, NVCC_OPTIONS, Launch
from facemask_sdk.spec import ModelSpec

CXX = shutil.which("g++")


# --- the CPU emulator of kernels.cu -----------------------------------------------------------------


EMULATOR_SHIM = r"""
#include <math.h>
#include <string.h>
#include <ucontext.h>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

struct fm_uint3 { unsigned int x, y, z; };
namespace fm_emu {
struct Fiber { ucontext_t ctx; fm_uint3 tid; bool done; bool waiting; };
static fm_uint3 grid_dim, block_dim, block_idx;
static std::vector<Fiber> fibers;
static std::vector<std::vector<char>> stacks;
static size_t current;
static ucontext_t scheduler;
static std::function<void()> body;
static void sync() { fibers[current].waiting = true; swapcontext(&fibers[current].ctx, &scheduler); }
static void fiber_main() { body(); fibers[current].done = true; }
}  // namespace fm_emu
#define threadIdx (fm_emu::fibers[fm_emu::current].tid)
#define blockIdx (fm_emu::block_idx)
#define blockDim (fm_emu::block_dim)
#define gridDim (fm_emu::grid_dim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __syncthreads() fm_emu::sync()
static inline unsigned int __float_as_uint(float x) { unsigned int u; memcpy(&u, &x, 4); return u; }
static inline float __uint_as_float(unsigned int u) { float x; memcpy(&x, &u, 4); return x; }
static inline unsigned int atomicAdd(unsigned int* p, unsigned int v) {  // fibers never run concurrently
    unsigned int old = *p;
    *p = old + v;
    return old;
}

#include "kernels.cu"

namespace fm_emu {
// Runs one block: every thread is a fiber; a round lets each live fiber run to its next barrier or to
// its end. Returns 1 if, in one round, some threads ended while others waited at a barrier.
static int run_block() {
    const size_t n = (size_t)block_dim.x * block_dim.y * block_dim.z;
    if (stacks.size() < n) stacks.resize(n);
    fibers.assign(n, Fiber());
    for (size_t i = 0; i < n; ++i) {
        if (stacks[i].empty()) stacks[i].resize(1 << 16);
        Fiber& f = fibers[i];
        f.tid = {(unsigned)(i % block_dim.x), (unsigned)((i / block_dim.x) % block_dim.y),
                 (unsigned)(i / ((size_t)block_dim.x * block_dim.y))};
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = stacks[i].data();
        f.ctx.uc_stack.ss_size = stacks[i].size();
        f.ctx.uc_link = &scheduler;
        makecontext(&f.ctx, fiber_main, 0);
    }
    size_t live = n;
    while (live) {
        size_t ended = 0, waited = 0;
        for (size_t i = 0; i < n; ++i) {
            if (fibers[i].done) continue;
            current = i;
            fibers[i].waiting = false;
            swapcontext(&scheduler, &fibers[i].ctx);
            if (fibers[i].done) { ++ended; --live; } else { ++waited; }
        }
        if (ended && waited) return 1;
    }
    return 0;
}

template <typename T> constexpr char code() {
    return std::is_pointer<T>::value ? 'P' : std::is_same<T, double>::value ? 'd'
         : std::is_same<T, float>::value ? 'f' : std::is_same<T, int>::value ? 'i'
         : std::is_same<T, unsigned int>::value ? 'I' : '?';
}

template <typename... Args, size_t... I>
static int launch(void (*kernel)(Args...), const unsigned* grid, const unsigned* block, void** argv,
                  std::index_sequence<I...>) {
    std::tuple<Args...> args(*static_cast<Args*>(argv[I])...);
    body = [&]() { std::apply(kernel, args); };
    grid_dim = {grid[0], grid[1], grid[2]};
    block_dim = {block[0], block[1], block[2]};
    for (unsigned z = 0; z < grid[2]; ++z)
        for (unsigned y = 0; y < grid[1]; ++y)
            for (unsigned x = 0; x < grid[0]; ++x) {
                block_idx = {x, y, z};
                if (run_block()) return 1;
            }
    return 0;
}
template <typename... Args>
static int launch_kernel(void (*kernel)(Args...), const unsigned* grid, const unsigned* block, void** argv) {
    return launch(kernel, grid, block, argv, std::index_sequence_for<Args...>{});
}

template <typename... Args> static std::string signature(void (*)(Args...)) { return std::string{code<Args>()...}; }
}  // namespace fm_emu

extern "C" unsigned short emu_f32_to_f16(float x) { return fm_f32_to_f16(x); }
extern "C" float emu_f16_to_f32(unsigned short h) { return fm_f16_to_f32(h); }

#define EMU(name)                                                                                   \
    extern "C" int emu_##name(const unsigned* grid, const unsigned* block, void** argv) {           \
        return fm_emu::launch_kernel(name, grid, block, argv);                                      \
    }                                                                                               \
    extern "C" const char* sig_##name() {                                                           \
        static const std::string s = fm_emu::signature(name);                                       \
        return s.c_str();                                                                           \
    }
"""


def _emulator_source() -> str:
    exports = "\n".join(f"EMU({name})" for name in KERNEL_ARGS)
    return EMULATOR_SHIM + exports + "\n"


@pytest.fixture(scope="session")
def emulator(tmp_path_factory) -> Emulator:
    if CXX is None:
        pytest.skip("g++ is not installed (needed to emulate the CUDA kernels on the CPU)")
    build = tmp_path_factory.mktemp("cuda_emulator")
    source = build / "emulator.cpp"
    source.write_text(_emulator_source())
    library = build / "libfmemu.so"
    result = subprocess.run(
        [
            CXX,
            "-std=c++17",
            "-O2",
            "-ffp-contract=off",
            "-fno-fast-math",
            "-shared",
            "-fPIC",
            *KERNEL_DEFINES,
            f"-I{KERNEL_SOURCE.parent}",
            "-o",
            str(library),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return Emulator(ctypes.CDLL(str(library)))


_CTYPES = {"P": ctypes.c_void_p, "d": ctypes.c_double, "f": ctypes.c_float, "i": ctypes.c_int, "I": ctypes.c_uint}


class Emulator:
    """Runs `Launch` plans on host memory: device pointers are plain NumPy array addresses."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self.library = library

    def signature(self, kernel: str) -> str:
        function = getattr(self.library, f"sig_{kernel}")
        function.restype = ctypes.c_char_p
        return function().decode()

    def run(self, launch: Launch) -> None:
        fmt = KERNEL_ARGS[launch.kernel]
        assert len(fmt) == len(launch.args), f"{launch.kernel}: {len(launch.args)} args for format {fmt!r}"
        values = [_CTYPES[c](v) for c, v in zip(fmt, launch.args)]
        argv = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        grid, block = (ctypes.c_uint * 3)(*launch.grid), (ctypes.c_uint * 3)(*launch.block)
        status = getattr(self.library, f"emu_{launch.kernel}")(grid, block, argv)
        assert status == 0, f"{launch.kernel}: threads of one block diverged at __syncthreads()"


# --- a stand-in pycuda on the emulator --------------------------------------------------------------
# Its "device memory" is host memory and its kernels run on the emulator (with a stand-in tensorrt in
# tests/facemask_sdk/backends/test_tensorrt.py). They run every line of the Python glue (buffers,
# mapped/copied frames, pitched crops, launch order, results, lifecycle, engine sharing) against the NumPy
# pipeline. The real APIs are exercised by tests/gpu on a GPU.


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


class _Pinned(bytearray):
    """`pagelocked_empty(...).base`: host memory that is also 'device' memory (as under UVA)."""

    mapped = False

    def get_device_pointer(self) -> int:
        assert self.mapped, "get_device_pointer() needs mem_flags=DEVICEMAP"
        return _address(np.frombuffer(self, np.uint8))

    def free(self) -> None:
        self[:] = b"\xcd" * len(self)


class FakeDriver(types.ModuleType):
    """The slice of `pycuda.driver` the kernels and the runner use, checked for misuse."""

    def __init__(self, emulator: Emulator, gpu_name: str = "Orin", capability=(8, 7), integrated: bool = True) -> None:
        super().__init__("pycuda.driver")
        driver = self
        self.attributes = {"CAN_MAP_HOST_MEMORY": 1, "INTEGRATED": int(integrated)}
        self.emulator, self.launches, self.live, self.stack = emulator, [], {}, []

        class Device:
            def __init__(self, ordinal: int) -> None:
                self.ordinal = ordinal

            @staticmethod
            def count() -> int:
                return 1

            def name(self) -> str:
                return gpu_name

            def compute_capability(self) -> tuple[int, int]:
                return capability

            def get_attribute(self, attribute) -> int:
                return driver.attributes[attribute]

            def retain_primary_context(self):
                return Context()

        class Context:
            def push(self) -> None:
                driver.stack.append(self)

            @staticmethod
            def pop() -> None:
                driver.stack.pop()

        class Stream:
            handle = 0x5EED

            def synchronize(self) -> None:
                driver.require_context()

        class Event:
            def record(self, stream=None):
                driver.require_context()
                assert isinstance(stream, Stream)
                return self

            def time_since(self, other) -> float:
                driver.require_context()  # cuEventElapsedTime needs a current context
                return 0.25

        class Allocation:
            def __init__(self, nbytes: int) -> None:
                self.memory = np.full(nbytes, 0xAB, np.uint8)  # garbage, like fresh device memory
                driver.live[int(self)] = self

            def __int__(self) -> int:
                return _address(self.memory)

            def free(self) -> None:
                driver.require_context()
                del driver.live[int(self)]

        self.Device, self.Context, self.Stream, self.Event, self.Allocation = Device, Context, Stream, Event, Allocation
        self.device_attribute = types.SimpleNamespace(
            CAN_MAP_HOST_MEMORY="CAN_MAP_HOST_MEMORY", INTEGRATED="INTEGRATED"
        )
        self.host_alloc_flags = types.SimpleNamespace(DEVICEMAP=2)

    def require_context(self) -> None:
        assert self.stack, "CUDA call without a current context"

    def init(self) -> None:
        pass

    def mem_alloc(self, nbytes: int):
        self.require_context()
        return self.Allocation(nbytes)

    def pagelocked_empty(self, shape, dtype, order="C", mem_flags=0) -> np.ndarray:
        self.require_context()
        buffer = _Pinned(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        buffer.mapped = bool(mem_flags & self.host_alloc_flags.DEVICEMAP)
        return np.ndarray(shape, dtype, buffer=buffer, order=order)

    def memcpy_htod(self, dst: int, src: np.ndarray) -> None:
        self.require_context()
        src = np.ascontiguousarray(src)
        ctypes.memmove(int(dst), _address(src), src.nbytes)

    def memcpy_dtoh(self, dst: np.ndarray, src: int) -> None:
        self.require_context()
        assert dst.flags.c_contiguous
        ctypes.memmove(_address(dst), int(src), dst.nbytes)

    def memcpy_htod_async(self, dst, src, stream=None) -> None:
        assert isinstance(stream, self.Stream)
        assert isinstance(src.base, _Pinned) or isinstance(getattr(src.base, "base", None), _Pinned), (
            "memcpy_htod_async needs page-locked host memory"
        )
        self.memcpy_htod(dst, src)

    def memcpy_dtoh_async(self, dst, src, stream=None) -> None:
        assert isinstance(stream, self.Stream) and isinstance(dst.base, _Pinned)
        self.memcpy_dtoh(dst, src)

    def source_module(self, source: str, nvcc: str = "nvcc", options=None, no_extern_c=False, cache_dir=None):
        driver = self
        assert source == KERNEL_SOURCE.read_text() and no_extern_c and tuple(options) == NVCC_OPTIONS
        assert cache_dir and Path(cache_dir).is_dir()

        class Function:
            def __init__(self, name: str) -> None:
                self.name = name

            def prepare(self, fmt: str):
                assert fmt == driver.emulator.signature(self.name)
                return self

            def prepared_async_call(self, grid, block, stream, *args, shared_size=0) -> None:
                driver.require_context()
                assert isinstance(stream, driver.Stream)
                driver.launches.append(self.name)
                driver.emulator.run(Launch(self.name, tuple(grid), tuple(block), args))

        return types.SimpleNamespace(get_function=Function)


@pytest.fixture
def fake_cuda(emulator: Emulator, monkeypatch, tmp_path: Path) -> FakeDriver:
    import sys

    import facemask_sdk.backends.tensorrt as trt_backend
    import facemask_sdk.cuda.kernels as kernels_module

    driver = FakeDriver(emulator)
    package = types.ModuleType("pycuda")
    package.driver = driver
    package.compiler = types.SimpleNamespace(SourceModule=driver.source_module)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setitem(sys.modules, "pycuda.compiler", package.compiler)
    monkeypatch.setattr(kernels_module, "_CONTEXTS", {})
    monkeypatch.setattr(kernels_module, "find_nvcc", lambda: "nvcc")
    monkeypatch.setattr(trt_backend, "_ENGINES", {})
    monkeypatch.setenv("FACEMASK_SDK_CACHE", str(tmp_path / "cache"))
    return driver


# --- a stand-in tensorrt on fake_cuda -------------------------------------------------------------


def _read(address: int, dtype, shape) -> np.ndarray:
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_char * count).from_address(address), dtype).reshape(shape).copy()


class FakeTensorRT(types.ModuleType):
    """`tensorrt` 10.x as far as TensorRTRunner uses it, on `fake_cuda`'s memory: the engine's 'network'
    records its input and writes fixed head outputs (tensor names as `facemask-sdk export` writes them)."""

    def __init__(
        self,
        spec: ModelSpec,
        logits: np.ndarray,
        box_codes: np.ndarray,
        *,
        io_dtype=np.float32,
        dynamic_batch: bool = False,
        dynamic_size: bool = False,
    ) -> None:
        super().__init__("tensorrt")
        trt = self
        self.__version__ = "10.3.0"
        self.deserialized, self.seen_inputs, self.refuse_addresses = 0, [], False
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
        self.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
        self.DataType = types.SimpleNamespace(FLOAT="FLOAT", HALF="HALF")
        dtype_name = "HALF" if np.dtype(io_dtype) == np.float16 else "FLOAT"
        height, width = spec.image_size
        batch = -1 if dynamic_batch else 1
        side = (-1, -1) if dynamic_size else (height, width)  # an engine of a --dynamic-size export
        shapes = {"images": (batch, 3, *side), "logits": (batch, *logits.shape), "boxes": (batch, *box_codes.shape)}
        outputs = {"logits": logits.astype(io_dtype), "boxes": box_codes.astype(io_dtype)}

        class Context:
            def __init__(self) -> None:
                self.addresses, self.batch = {}, None if dynamic_batch or dynamic_size else 1

            def set_input_shape(self, name, shape) -> bool:
                assert name == "images" and tuple(shape) == (1, 3, height, width)
                self.batch = 1
                return True

            def get_tensor_shape(self, name):
                if name == "images" and self.batch:
                    return (1, 3, height, width)
                return (self.batch if self.batch else -1, *shapes[name][1:])

            def set_tensor_address(self, name, address) -> bool:
                self.addresses[name] = int(address)
                return not trt.refuse_addresses

            def execute_async_v3(self, stream_handle) -> bool:
                assert stream_handle == 0x5EED and set(self.addresses) == set(shapes) and self.batch == 1
                trt.seen_inputs.append(_read(self.addresses["images"], io_dtype, (3, height, width)))
                for name, array in outputs.items():
                    ctypes.memmove(self.addresses[name], _address(array), array.nbytes)
                return True

        class Engine:
            num_io_tensors = 3

            def get_tensor_name(self, index: int) -> str:
                return ["images", "logits", "boxes"][index]

            def get_tensor_mode(self, name: str) -> str:
                return "INPUT" if name == "images" else "OUTPUT"

            def get_tensor_shape(self, name: str):
                return shapes[name]

            def get_tensor_dtype(self, name: str) -> str:
                return dtype_name

            def create_execution_context(self):
                return Context()

        class Runtime:
            def __init__(self, logger) -> None:
                pass

            def deserialize_cuda_engine(self, data: bytes):
                trt.deserialized += 1
                return Engine() if data == b"fake engine" else None

        self.Runtime = Runtime

    @staticmethod
    def nptype(dtype_name: str):
        return {"FLOAT": np.float32, "HALF": np.float16}[dtype_name]


SPEC_256 = ModelSpec("tf_efficientdet_d0", (256, 256))


@pytest.fixture
def fake_engine(tmp_path: Path) -> Path:
    """An engine file FakeTensorRT loads, with its sidecar: D0 at 256 px, built for Orin (fake_cuda's GPU)."""
    from facemask_sdk.engine_meta import write_sidecar

    path = tmp_path / "model.fp16.engine"
    path.write_bytes(b"fake engine")
    write_sidecar(
        path,
        {
            "spec": SPEC_256.to_dict(),
            "precision": "fp16",
            "tensorrt_version": "10.3.0",
            "gpu_name": "Orin",
            "compute_capability": "8.7",
            "onnx_sha256": "0" * 64,
        },
    )
    return path


@pytest.fixture
def fake_tensorrt(fake_cuda, monkeypatch):
    """`install(logits, box_codes, io_dtype=np.float32, dynamic_batch=False) -> FakeTensorRT`: the
    stand-in as the `tensorrt` module, for engines of `fake_engine`'s spec (D0, 256 px)."""
    import sys

    def install(
        logits: np.ndarray,
        box_codes: np.ndarray,
        io_dtype=np.float32,
        dynamic_batch: bool = False,
        dynamic_size: bool = False,
    ):
        trt = FakeTensorRT(
            SPEC_256, logits, box_codes, io_dtype=io_dtype, dynamic_batch=dynamic_batch, dynamic_size=dynamic_size
        )
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return trt

    return install


# --- NumPy references: head outputs and detections --------------------------------------------------


def head_outputs(rng: np.random.Generator, num_anchors: int, num_classes: int, positives: int, spread: float = 3.0):
    """Mostly background logits (scores ~0.002) plus `positives` random anchors with high scores."""
    logits = rng.normal(-6.0, 1.0, (num_anchors, num_classes)).astype(np.float32)
    hot = rng.choice(num_anchors * num_classes, positives, replace=False)
    logits.reshape(-1)[hot] = rng.uniform(-1.0, 6.0, positives).astype(np.float32)
    box_codes = rng.normal(0.0, 0.3 * spread / 3.0, (num_anchors, 4)).astype(np.float32)
    return logits, box_codes


def assert_same_detections(got, expected, box_atol: float = 1e-3) -> None:
    (boxes, scores, classes), (ref_boxes, ref_scores, ref_classes) = got, expected
    assert len(boxes) == len(ref_boxes), f"{len(boxes)} detections, reference {len(ref_boxes)}"
    np.testing.assert_array_equal(classes, ref_classes)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(boxes, ref_boxes, rtol=0, atol=box_atol)


@pytest.fixture(name="head_outputs")
def head_outputs_fixture():
    """`head_outputs(rng, num_anchors, num_classes, positives, spread=3.0)`: (logits, box_codes)."""
    return head_outputs


@pytest.fixture(name="assert_same_detections")
def assert_same_detections_fixture():
    """`assert_same_detections(got, expected, box_atol=1e-3)` on (boxes, scores, class_ids) triples."""
    return assert_same_detections


# --- hand-made VOC folders --------------------------------------------------------------------------


def write_xml(path: Path, filename: str, size: tuple[int, int], objects: list[tuple[str, tuple]]) -> None:
    objs = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b in objects
    )
    path.write_text(
        f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>"
    )


def make_dataset(root: Path, n: int = 6) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"img{i}.png"), rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
        write_xml(root / "annotations" / f"img{i}.xml", f"img{i}.png", (80, 60), [("with_mask", (10, 10, 30, 30))])
    return root


@pytest.fixture(name="write_xml")
def write_xml_fixture():
    """`write_xml(path, filename, (width, height), [(class name, (x0, y0, x1, y1)), ...])`: one VOC annotation."""
    return write_xml


@pytest.fixture(name="make_dataset")
def make_dataset_fixture():
    """`make_dataset(root, n=6)`: a VOC folder of `n` random 80x60 images with one with_mask box each."""
    return make_dataset
