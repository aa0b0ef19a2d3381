"""The CUDA source without a GPU: `nvcc -ptx` compiles it, and a CPU emulator runs it against NumPy.

1. `nvcc -ptx` for Jetson Orin (sm_87) and Hopper (sm_90) with the pipeline's options: no errors, no
   warnings, and every kernel's PTX parameter list matches the argument formats pycuda packs
   (`pipeline.KERNEL_ARGS`).
2. The emulator compiles `kernels.cu` as C++ with a small shim (`EMULATOR_SHIM`): each block's threads
   are fibers (ucontext) switched at `__syncthreads()`, `__shared__` is `static`, atomics are plain
   (fibers never run concurrently). It runs the *same launch plans* as the GPU path
   (`plan_letterbox`, `plan_decode`) and checks the results against the NumPy reference: the
   letterbox bit for bit against cv2, decoding/top-K/NMS exactly against `facemask_sdk.postprocess`.
   It also fails a launch whose threads do not all reach the same `__syncthreads()`.
   What it cannot check: real parallel races, warp scheduling, the inline PTX of the half-precision
   conversions (it uses the portable C++ path of `fm_f32_to_f16`) and timing; tests/gpu covers those.
"""

from __future__ import annotations

import ctypes
import re
import types
import zlib
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemask_sdk.anchors import generate_anchors
from facemask_sdk.errors import FacemaskError
from facemask_sdk.cuda import probe
from facemask_sdk.cuda.plans import (
    KERNEL_ARGS,
    KERNEL_DEFINES,
    KERNEL_SOURCE,
    NVCC_OPTIONS,
    DecodeSettings,
    Launch,
    check_frame,
    decode_buffer_specs,
    output_specs,
    plan_decode,
    plan_letterbox,
)
from facemask_sdk.postprocess import PostprocessConfig, batched_nms, decode_boxes, postprocess, top_k_indices
from facemask_sdk.preprocess import Letterbox, preprocess
from facemask_sdk.spec import INCEPTION_MEAN_255, INCEPTION_STD_255, ModelSpec

REPO = Path(__file__).resolve().parents[1]
SAMPLE_IMAGES = sorted((REPO / "samples" / "images").glob("*.png"))
NVCC = shutil.which("nvcc")
CXX = shutil.which("g++")
PTX_TYPES = {"P": ".u64", "d": ".f64", "f": ".f32", "i": ".u32", "I": ".u32"}

# --- 1. nvcc ----------------------------------------------------------------------------------------


@pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA toolkit compiler) is not installed")
@pytest.mark.parametrize("arch", ["sm_87", "sm_90"])
def test_nvcc_compiles_kernels_to_ptx(arch: str, tmp_path: Path) -> None:
    out = tmp_path / f"kernels_{arch}.ptx"
    result = subprocess.run(
        [NVCC, "-ptx", *NVCC_OPTIONS, f"-arch={arch}", "-o", str(out), str(KERNEL_SOURCE)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert not (result.stdout + result.stderr).strip(), f"nvcc warnings:\n{result.stderr}"
    ptx = out.read_text()
    entries = dict(re.findall(r"\.visible \.entry (\w+)\(([^)]*)\)", ptx))
    assert set(entries) == set(KERNEL_ARGS), "kernels.cu and pipeline.KERNEL_ARGS list different kernels"
    for name, fmt in KERNEL_ARGS.items():
        ptx_types = re.findall(r"\.param (\.\w+)", entries[name])
        assert ptx_types == [PTX_TYPES[c] for c in fmt], f"{name}: PTX params {ptx_types} vs format {fmt!r}"


# --- 2. CPU emulator --------------------------------------------------------------------------------

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
def emulator(tmp_path_factory) -> "Emulator":
    if CXX is None:
        pytest.skip("g++ is not installed (needed to emulate the CUDA kernels on the CPU)")
    build = tmp_path_factory.mktemp("cuda_emulator")
    source = build / "emulator.cpp"
    source.write_text(_emulator_source())
    library = build / "libfmemu.so"
    result = subprocess.run(
        [CXX, "-std=c++17", "-O2", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC",
         *KERNEL_DEFINES, f"-I{KERNEL_SOURCE.parent}", "-o", str(library), str(source)],
        capture_output=True, text=True, timeout=300,
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


def ptr(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


class EmulatedDecoder:
    """`CudaPipeline`'s decoding half on the emulator, with buffers sized by the same functions."""

    def __init__(self, emulator: Emulator, spec: ModelSpec, config: PostprocessConfig, head_dtype=np.float32):
        self.emulator, self.spec, self.head_dtype = emulator, spec, np.dtype(head_dtype)
        self.settings = DecodeSettings.from_config(config)
        self.anchors = np.ascontiguousarray(generate_anchors(spec), np.float32)
        self.num_anchors, self.num_classes = len(self.anchors), spec.num_classes
        specs = decode_buffer_specs(self.num_anchors, self.num_classes, self.settings)
        # garbage-filled, like fresh device memory: nothing may rely on zeroed buffers
        self.buffers = {
            name: np.full(count * dtype.itemsize, 0xAB, np.uint8).view(dtype) for name, (dtype, count) in specs.items()
        }
        for name, (dtype, shape) in output_specs(self.settings.max_detections).items():
            self.buffers[name] = np.zeros(shape, dtype)

    def run(self, logits: np.ndarray, regressions: np.ndarray, box: Letterbox):
        self.buffers["logits"] = np.ascontiguousarray(logits, self.head_dtype)
        self.buffers["regressions"] = np.ascontiguousarray(regressions, self.head_dtype)
        self.buffers["anchors"] = self.anchors
        pointers = {name: ptr(array) for name, array in self.buffers.items()}
        for launch in plan_decode(pointers, self.num_anchors, self.num_classes, box, self.settings, self.head_dtype):
            self.emulator.run(launch)
        n = int(self.buffers["out_count"][0])
        return (self.buffers["out_boxes"][:n].copy(), self.buffers["out_scores"][:n].copy(),
                self.buffers["out_classes"][:n].astype(np.int64))

    def candidates(self) -> dict:
        m = int(self.buffers["counters"][1])
        b = self.buffers
        return {"num_candidates": int(b["counters"][0]), "boxes": b["boxes"][: 4 * m].reshape(m, 4),
                "scores": b["scores"][:m], "class_ids": b["classes"][:m].astype(np.int64),
                "flat_index": b["flat_index"][:m].astype(np.int64)}


def emulated_letterbox(emulator: Emulator, frame: np.ndarray, spec: ModelSpec, dtype=np.float32):
    frame = check_frame(frame)
    out = np.full((3, *spec.image_size), np.nan, dtype)
    launch, box = plan_letterbox(ptr(frame), frame.shape[:2], frame.strides[0], ptr(out), dtype, spec)
    emulator.run(launch)
    return out, box


# --- emulator: plumbing -----------------------------------------------------------------------------


def test_kernel_signatures_match_pycuda_formats(emulator: Emulator) -> None:
    for name, fmt in KERNEL_ARGS.items():
        assert emulator.signature(name) == fmt, name


# --- emulator: letterbox ----------------------------------------------------------------------------

SPEC_128 = ModelSpec("tf_efficientdet_d0", (128, 128))


def _reference_uint8_gap(out: np.ndarray, reference: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """|kernel - reference| in uint8 steps (before normalisation), per element."""
    std = np.asarray(spec.std, np.float32)[:, None, None]
    return np.abs(out.astype(np.float32) - reference) * std


@pytest.mark.parametrize(
    "frame_hw, input_hw",
    [((96, 160), (128, 128)), ((300, 41), (128, 256)), ((37, 53), (128, 128)), ((128, 128), (128, 128)),
     ((256, 256), (128, 128)), ((1, 1), (128, 128)), ((257, 130), (256, 128))],
)
def test_letterbox_is_bit_exact_with_opencv(emulator: Emulator, frame_hw, input_hw) -> None:
    rng = np.random.default_rng(sum(frame_hw) + sum(input_hw))
    spec = ModelSpec("tf_efficientdet_d0", input_hw)
    frame = rng.integers(0, 256, (*frame_hw, 3), dtype=np.uint8)
    out, box = emulated_letterbox(emulator, frame, spec)
    reference, ref_box = preprocess(frame, spec)
    assert box == ref_box
    np.testing.assert_array_equal(out, reference)


def test_letterbox_on_real_images_and_a_pitched_crop(emulator: Emulator) -> None:
    assert SAMPLE_IMAGES, "samples/images is empty"
    spec = ModelSpec("tf_efficientdet_d0", (256, 256), mean=INCEPTION_MEAN_255, std=INCEPTION_STD_255)
    for path in SAMPLE_IMAGES[:2]:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        out, _ = emulated_letterbox(emulator, image, spec)
        reference, _ = preprocess(image, spec)
        np.testing.assert_array_equal(out, reference)
        crop = image[7:-5, 11:-3]  # a view: rows padded, start not at the buffer start
        assert not crop.flags.c_contiguous
        out, _ = emulated_letterbox(emulator, crop, spec)
        reference, _ = preprocess(np.ascontiguousarray(crop), spec)
        np.testing.assert_array_equal(out, reference)


def test_letterbox_half_output_is_the_rounded_float(emulator: Emulator) -> None:
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (90, 200, 3), dtype=np.uint8)
    out, _ = emulated_letterbox(emulator, frame, SPEC_128, np.float16)
    reference, _ = preprocess(frame, SPEC_128)
    np.testing.assert_array_equal(out, reference.astype(np.float16))


def test_half_conversions_match_numpy(emulator: Emulator) -> None:
    """The portable float<->half code (the GPU uses cvt.rn instead): every half, and floats of all kinds."""
    to_half, to_float = emulator.library.emu_f32_to_f16, emulator.library.emu_f16_to_f32
    to_half.argtypes, to_half.restype = [ctypes.c_float], ctypes.c_ushort
    to_float.argtypes, to_float.restype = [ctypes.c_ushort], ctypes.c_float
    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    expected = halves.view(np.float16).astype(np.float32)
    got = np.array([to_float(int(h)) for h in halves], np.float32)
    nan = np.isnan(expected)  # payloads get quieted on the way through ctypes: compare NaN-ness only
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), expected[~nan].view(np.uint32))

    rng = np.random.default_rng(0)
    floats = np.concatenate([
        rng.normal(0, 1, 3000), rng.normal(0, 3e4, 2000), rng.uniform(-1e-4, 1e-4, 2000),
        rng.uniform(-1e-7, 1e-7, 1000), expected[np.isfinite(expected)][::13],  # exact halves
        (expected[np.isfinite(expected)][::17].astype(np.float64) * (1 + 2.0**-11)),  # ties between halves
        [65504.0, 65519.99, 65520.0, 1e9, -1e9, np.inf, -np.inf, 0.0, -0.0, 2.0**-25, 2.0**-24, 2.0**-26],
    ]).astype(np.float32)
    got = np.array([to_half(float(f)) for f in floats], np.uint16)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got, floats.astype(np.float16).view(np.uint16))
    assert to_half(float("nan")) & 0x7C00 == 0x7C00 and to_half(float("nan")) & 0x3FF


# --- emulator: decoding, top-K, NMS ------------------------------------------------------------------


def head_outputs(rng: np.random.Generator, num_anchors: int, num_classes: int, positives: int, spread: float = 3.0):
    """Mostly background logits (scores ~0.002) plus `positives` random anchors with high scores."""
    logits = rng.normal(-6.0, 1.0, (num_anchors, num_classes)).astype(np.float32)
    hot = rng.choice(num_anchors * num_classes, positives, replace=False)
    logits.reshape(-1)[hot] = rng.uniform(-1.0, 6.0, positives).astype(np.float32)
    regressions = rng.normal(0.0, 0.3 * spread / 3.0, (num_anchors, 4)).astype(np.float32)
    return logits, regressions


def assert_same_detections(got, expected, box_atol: float = 1e-3) -> None:
    (boxes, scores, classes), (ref_boxes, ref_scores, ref_classes) = got, expected
    assert len(boxes) == len(ref_boxes), f"{len(boxes)} detections, reference {len(ref_boxes)}"
    np.testing.assert_array_equal(classes, ref_classes)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(boxes, ref_boxes, rtol=0, atol=box_atol)


CASES = {
    # name: (frame hw, config, positives)
    "default": ((480, 640), PostprocessConfig(), 300),
    "few": ((100, 120), PostprocessConfig(), 3),
    "none": ((100, 120), PostprocessConfig(score_threshold=0.999), 0),
    "top_k_cut": ((480, 640), PostprocessConfig(score_threshold=0.05, top_k=200), 2000),
    "top_k_1": ((64, 64), PostprocessConfig(score_threshold=0.05, top_k=1, max_detections=5), 50),
    "max_det_3": ((480, 640), PostprocessConfig(max_detections=3), 300),
    "strict_iou": ((480, 640), PostprocessConfig(iou_threshold=0.1), 500),
    "no_nms": ((480, 640), PostprocessConfig(iou_threshold=1.0, max_detections=500, top_k=500), 400),
    "threshold_0": ((128, 128), PostprocessConfig(score_threshold=0.0, top_k=300, max_detections=50), 0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_decode_nms_matches_numpy(emulator: Emulator, case: str) -> None:
    frame_hw, config, positives = CASES[case]
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    decoder = EmulatedDecoder(emulator, SPEC_128, config)
    logits, regressions = head_outputs(rng, decoder.num_anchors, decoder.num_classes, positives)
    box = Letterbox.fit(frame_hw, SPEC_128.image_size)
    got = decoder.run(logits, regressions, box)
    expected = postprocess(logits, regressions, decoder.anchors, box, config)
    assert_same_detections(got, expected)

    # top-K stage on its own: the same candidates, in the same order, with the same boxes
    flat = logits.reshape(-1)
    passing = np.flatnonzero(flat > config.logit_threshold) if config.score_threshold > 0 else np.arange(flat.size)
    chosen = passing[top_k_indices(flat[passing], config.top_k)]
    state = decoder.candidates()
    assert state["num_candidates"] == len(passing)
    np.testing.assert_array_equal(state["flat_index"], chosen)
    np.testing.assert_array_equal(state["class_ids"], chosen % decoder.num_classes)
    anchors_of = chosen // decoder.num_classes
    ref_boxes = box.to_original(decode_boxes(regressions[anchors_of], decoder.anchors[anchors_of]))
    np.testing.assert_allclose(state["boxes"], ref_boxes, rtol=0, atol=1e-3)


def test_all_pairs_above_threshold_uses_radix_select(emulator: Emulator) -> None:
    """Every (anchor, class) passes: 9207 candidates for top_k = 1000, ties included."""
    config = PostprocessConfig(score_threshold=0.3, top_k=1000, max_detections=100)
    decoder = EmulatedDecoder(emulator, SPEC_128, config)
    rng = np.random.default_rng(7)
    logits = rng.normal(2.0, 1.0, (decoder.num_anchors, decoder.num_classes)).astype(np.float32)
    logits.reshape(-1)[rng.choice(logits.size, 3000, replace=False)] = np.float32(2.5)  # ties at the cut
    logits[5:9] = np.float32(30.0)  # sigmoid saturates to 1.0: ranked by logit, then by index
    regressions = rng.normal(0, 0.2, (decoder.num_anchors, 4)).astype(np.float32)
    box = Letterbox.fit((200, 300), SPEC_128.image_size)
    got = decoder.run(logits, regressions, box)
    assert_same_detections(got, postprocess(logits, regressions, decoder.anchors, box, config))
    flat = logits.reshape(-1)
    np.testing.assert_array_equal(decoder.candidates()["flat_index"], top_k_indices(flat, 1000))


def test_half_head_outputs(emulator: Emulator) -> None:
    config = PostprocessConfig()
    decoder = EmulatedDecoder(emulator, SPEC_128, config, head_dtype=np.float16)
    rng = np.random.default_rng(11)
    logits, regressions = head_outputs(rng, decoder.num_anchors, decoder.num_classes, 200)
    logits, regressions = logits.astype(np.float16), regressions.astype(np.float16)
    box = Letterbox.fit((300, 400), SPEC_128.image_size)
    got = decoder.run(logits, regressions, box)
    expected = postprocess(logits.astype(np.float32), regressions.astype(np.float32), decoder.anchors, box, config)
    assert_same_detections(got, expected)


@pytest.mark.parametrize("class_agnostic", [True, False], ids=["one-box-per-face", "class-aware"])
def test_nms_keep_sets_on_crowded_boxes(emulator: Emulator, class_agnostic: bool) -> None:
    """Many near-duplicate boxes of all classes: the kept set equals batched_nms exactly."""
    config = PostprocessConfig(score_threshold=0.2, iou_threshold=0.5, max_detections=1000, top_k=2000,
                               class_agnostic=class_agnostic)
    decoder = EmulatedDecoder(emulator, SPEC_128, config)
    rng = np.random.default_rng(5)
    logits, regressions = head_outputs(rng, decoder.num_anchors, decoder.num_classes, 1800, spread=1.0)
    box = Letterbox.fit((128, 128), SPEC_128.image_size)
    boxes, scores, classes = decoder.run(logits, regressions, box)
    state = decoder.candidates()
    groups = np.zeros_like(state["class_ids"]) if class_agnostic else state["class_ids"]
    keep = batched_nms(state["boxes"], state["scores"], groups, config.iou_threshold)
    np.testing.assert_array_equal(classes, state["class_ids"][keep])
    np.testing.assert_array_equal(boxes, state["boxes"][keep])
    assert 100 < len(keep) < len(state["scores"])  # NMS did real work


def test_non_finite_and_empty_detections_are_dropped_like_numpy(emulator: Emulator) -> None:
    """NaN/inf head outputs and boxes clipped to nothing never become detections, in both paths."""
    config = PostprocessConfig(score_threshold=0.3)
    decoder = EmulatedDecoder(emulator, SPEC_128, config)
    rng = np.random.default_rng(21)
    logits, regressions = head_outputs(rng, decoder.num_anchors, decoder.num_classes, 300)
    hot = np.flatnonzero((logits > 0).any(1))
    regressions[hot[:20]] = np.nan
    regressions[hot[20:40], 2:] = np.float32(np.inf)
    regressions[hot[40:60], 0] = np.float32(1e4)  # centre far outside the image: clipped to an empty box
    logits[hot[60:65]] = np.float32(np.inf)  # score 1.0 with a finite box: a valid detection
    box = Letterbox.fit((100, 140), SPEC_128.image_size)
    got = decoder.run(logits, regressions, box)
    expected = postprocess(logits, regressions, decoder.anchors, box, config)
    assert_same_detections(got, expected)
    boxes, scores, _ = expected
    assert len(boxes) and np.isfinite(boxes).all() and np.isfinite(scores).all()
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()


# --- 3. CudaPipeline and TensorRTRunner on the emulator ----------------------------------------------
# A stand-in for pycuda whose "device memory" is host memory and whose kernels run on the emulator, and
# a stand-in for tensorrt whose "network" writes fixed head outputs. They run every line of the Python
# glue (buffers, mapped/copied frames, pitched crops, launch order, results, lifecycle, engine
# sharing) against the NumPy pipeline. The real APIs are exercised by tests/gpu on a GPU.


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def _read(address: int, dtype, shape) -> np.ndarray:
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_char * count).from_address(address), dtype).reshape(shape).copy()


class _Pinned(bytearray):
    """`pagelocked_empty(...).base`: host memory that is also 'device' memory (as under UVA)."""

    mapped = False

    def get_device_pointer(self) -> int:
        assert self.mapped, "get_device_pointer() needs mem_flags=DEVICEMAP"
        return _address(np.frombuffer(self, np.uint8))

    def free(self) -> None:
        self[:] = b"\xcd" * len(self)


class FakeDriver(types.ModuleType):
    """The slice of `pycuda.driver` the pipeline and the runner use, checked for misuse."""

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
                assert isinstance(stream, Stream)
                return self

            def time_since(self, other) -> float:
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
        self.device_attribute = types.SimpleNamespace(CAN_MAP_HOST_MEMORY="CAN_MAP_HOST_MEMORY", INTEGRATED="INTEGRATED")
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
    import facemask_sdk.cuda.pipeline as pipeline_module

    driver = FakeDriver(emulator)
    package = types.ModuleType("pycuda")
    package.driver = driver
    package.compiler = types.SimpleNamespace(SourceModule=driver.source_module)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setitem(sys.modules, "pycuda.compiler", package.compiler)
    monkeypatch.setattr(pipeline_module, "_CONTEXTS", {})
    monkeypatch.setattr(pipeline_module, "find_nvcc", lambda: "nvcc")
    monkeypatch.setattr(trt_backend, "_ENGINES", {})
    monkeypatch.setenv("FACEMASK_SDK_CACHE", str(tmp_path / "cache"))
    return driver


SPEC_256 = ModelSpec("tf_efficientdet_d0", (256, 256))


def test_kernels_take_their_sizes_from_the_pipeline_only(tmp_path: Path) -> None:
    """kernels.cu defines none of the shared sizes itself: without the pipeline's -D definitions it does
    not compile, so a size can only change in `KERNEL_CONSTANTS` (buffers and kernels together)."""
    from facemask_sdk.cuda.plans import KERNEL_CONSTANTS

    source = KERNEL_SOURCE.read_text()
    for name in KERNEL_CONSTANTS:
        assert not re.search(rf"#define\s+{name}\b", source), name
    if CXX is None:
        pytest.skip("g++ is not installed (needed to preprocess kernels.cu)")
    probe = tmp_path / "probe.cpp"
    probe.write_text('#define __global__\n#include "kernels.cu"\n')
    result = subprocess.run([CXX, "-E", f"-I{KERNEL_SOURCE.parent}", str(probe)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "KERNEL_DEFINES" in result.stderr


@pytest.mark.parametrize(
    ("requested", "integrated", "can_map", "expected"),
    [(None, True, True, True), (None, False, True, False), (None, True, False, False),
     (True, False, True, True), (False, True, True, False)],
)
def test_mapped_memory_on_integrated_gpus_copies_on_discrete(requested, integrated, can_map, expected) -> None:
    from facemask_sdk.cuda.pipeline import use_mapped_memory

    assert use_mapped_memory(requested, integrated, can_map) is expected


def test_mapped_memory_refused_where_the_device_cannot_map() -> None:
    from facemask_sdk.cuda.pipeline import use_mapped_memory

    with pytest.raises(FacemaskError, match="cannot map host memory; use mapped=False"):
        use_mapped_memory(True, True, False, "Old GPU")


@pytest.mark.parametrize("integrated", [True, False])
def test_pipeline_picks_memory_by_the_devices_integrated_attribute(fake_cuda: FakeDriver, integrated: bool) -> None:
    from facemask_sdk.cuda import CudaPipeline

    fake_cuda.attributes["INTEGRATED"] = int(integrated)
    with CudaPipeline(SPEC_256) as gpu:
        assert gpu.mapped is integrated


@pytest.mark.parametrize("mapped", [True, False])
def test_pipeline_matches_numpy(fake_cuda: FakeDriver, mapped: bool) -> None:
    from facemask_sdk.cuda import CudaPipeline

    config = PostprocessConfig(score_threshold=0.3)
    rng = np.random.default_rng(1)
    image = cv2.imread(str(SAMPLE_IMAGES[0]), cv2.IMREAD_COLOR)
    with CudaPipeline(SPEC_256, config, mapped=mapped) as gpu:
        # a frame that is not ours: copied once into a pinned staging buffer
        box = gpu.preprocess(image)
        gpu.synchronize()
        reference, ref_box = preprocess(image, SPEC_256)
        assert box == ref_box
        np.testing.assert_array_equal(probe.download_input(gpu), reference)

        # a crop of a frame_buffer(): read in place (pitched), no staging copy
        frame = gpu.frame_buffer(*image.shape[:2])
        frame[:] = image
        staged = len(gpu._staging)
        crop = frame[10:-20, 30:-5]
        gpu.preprocess(crop)
        gpu.synchronize()
        assert len(gpu._staging) == staged
        np.testing.assert_array_equal(probe.download_input(gpu), preprocess(np.ascontiguousarray(crop), SPEC_256)[0])

        logits, regressions = head_outputs(rng, gpu.num_anchors, gpu.num_classes, 400)
        probe.upload_head(gpu, logits, regressions)
        gpu.decode_nms(box)
        with pytest.raises(FacemaskError, match="before synchronize"):
            gpu.results()
        gpu.synchronize()
        got = gpu.results()
        anchors = generate_anchors(SPEC_256)
        assert_same_detections(got, postprocess(logits, regressions, anchors, box, config))
        assert 0 < len(got[0]) <= config.max_detections
        assert probe.candidates(gpu)["num_candidates"] == int((logits > config.logit_threshold).sum())
        np.testing.assert_array_equal(gpu.download_head()[0], logits)
    assert not fake_cuda.live, "close() left device memory allocated"
    assert not fake_cuda.stack, "a context was left pushed"
    assert fake_cuda.launches[:1] == ["fm_letterbox_f32"]


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda gpu: gpu.preprocess(np.zeros((10, 10), np.uint8)), "BGR uint8 HxWx3"),
        (lambda gpu: gpu.preprocess(np.zeros((10, 10, 3), np.float32)), "float32"),
        (lambda gpu: gpu.preprocess(np.zeros((0, 10, 3), np.uint8)), "(0, 10, 3)"),
        (lambda gpu: gpu.preprocess([[1, 2, 3]]), "numpy array"),
        (lambda gpu: gpu.frame_buffer(0, 10), "positive"),
        (lambda gpu: probe.upload_head(gpu, np.zeros((5, 3)), np.zeros((5, 4))), "logits must have shape"),
        (lambda gpu: gpu.upload_input(np.zeros((3, 10, 10))), "input must have shape"),
    ],
)
def test_pipeline_refuses_bad_input(fake_cuda: FakeDriver, call, words: str) -> None:
    from facemask_sdk.cuda import CudaPipeline

    with CudaPipeline(SPEC_128) as gpu:
        with pytest.raises(FacemaskError) as info:
            call(gpu)
        assert words in str(info.value)


def test_pipeline_lifecycle_and_threads(fake_cuda: FakeDriver, error_of) -> None:
    import threading

    from facemask_sdk.cuda import CudaPipeline

    with pytest.raises(FacemaskError, match="top_k"):
        CudaPipeline(SPEC_128, PostprocessConfig(top_k=20000))
    gpu = CudaPipeline(SPEC_128)
    errors = []
    blank = np.zeros((4, 4, 3), np.uint8)
    thread = threading.Thread(target=lambda: errors.append(error_of(lambda: gpu.preprocess(blank))))
    thread.start()
    thread.join()
    assert errors and "thread that created it" in errors[0]
    gpu.close()
    gpu.close()  # idempotent
    with pytest.raises(FacemaskError, match="closed"):
        gpu.preprocess(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(FacemaskError, match="closed"):
        gpu.results()
    assert not fake_cuda.live and not fake_cuda.stack


# --- the TensorRT runner with a stand-in tensorrt module ----------------------------------------------


class FakeTensorRT(types.ModuleType):
    """`tensorrt` 10.x as far as TensorRTRunner uses it; the engine's 'network' writes fixed outputs."""

    def __init__(self, spec: ModelSpec, logits: np.ndarray, regressions: np.ndarray, *, io_dtype=np.float32,
                 dynamic_batch: bool = False) -> None:
        super().__init__("tensorrt")
        trt = self
        self.__version__ = "10.3.0"
        self.deserialized, self.seen_inputs = 0, []
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
        self.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
        self.DataType = types.SimpleNamespace(FLOAT="FLOAT", HALF="HALF")
        dtype_name = "HALF" if np.dtype(io_dtype) == np.float16 else "FLOAT"
        height, width = spec.image_size
        batch = -1 if dynamic_batch else 1
        shapes = {"input": (batch, 3, height, width), "logits": (batch, *logits.shape),
                  "boxes": (batch, *regressions.shape)}
        outputs = {"logits": logits.astype(io_dtype), "boxes": regressions.astype(io_dtype)}

        class Context:
            def __init__(self) -> None:
                self.addresses, self.batch = {}, None if dynamic_batch else 1

            def set_input_shape(self, name, shape) -> bool:
                assert name == "input" and tuple(shape) == (1, 3, height, width)
                self.batch = 1
                return True

            def get_tensor_shape(self, name):
                return (self.batch if self.batch else -1, *shapes[name][1:])

            def set_tensor_address(self, name, address) -> bool:
                self.addresses[name] = int(address)
                return True

            def execute_async_v3(self, stream_handle) -> bool:
                assert stream_handle == 0x5EED and set(self.addresses) == set(shapes) and self.batch == 1
                trt.seen_inputs.append(_read(self.addresses["input"], io_dtype, (3, height, width)))
                for name, array in outputs.items():
                    ctypes.memmove(self.addresses[name], _address(array), array.nbytes)
                return True

        class Engine:
            num_io_tensors = 3

            def get_tensor_name(self, index: int) -> str:
                return ["input", "logits", "boxes"][index]

            def get_tensor_mode(self, name: str) -> str:
                return "INPUT" if name == "input" else "OUTPUT"

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


@pytest.fixture
def fake_engine(tmp_path: Path) -> Path:
    from facemask_sdk.engine_meta import write_sidecar

    path = tmp_path / "model.fp16.engine"
    path.write_bytes(b"fake engine")
    write_sidecar(path, {"spec": SPEC_256.to_dict(), "precision": "fp16", "tensorrt_version": "10.3.0",
                         "gpu_name": "Orin", "compute_capability": "8.7", "onnx_sha256": "0" * 64})
    return path


@pytest.mark.parametrize("mapped, io_dtype, dynamic", [(True, np.float32, False), (False, np.float16, True)])
def test_tensorrt_runner_end_to_end(fake_cuda, fake_engine, monkeypatch, mapped, io_dtype, dynamic, error_of) -> None:
    import sys
    import threading

    from facemask_sdk.backends.tensorrt import TensorRTRunner, _ENGINES

    rng = np.random.default_rng(2)
    anchors = generate_anchors(SPEC_256)
    logits, regressions = head_outputs(rng, len(anchors), SPEC_256.num_classes, 300)
    trt = FakeTensorRT(SPEC_256, logits, regressions, io_dtype=io_dtype, dynamic_batch=dynamic)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    config = PostprocessConfig(score_threshold=0.3, max_detections=50)
    image = cv2.imread(str(SAMPLE_IMAGES[1]), cv2.IMREAD_COLOR)
    head = (logits.astype(io_dtype).astype(np.float32), regressions.astype(io_dtype).astype(np.float32))

    with TensorRTRunner(fake_engine, config, mapped=mapped) as runner:
        second = TensorRTRunner(fake_engine, config)
        assert trt.deserialized == 1 and len(_ENGINES) == 1  # two execution contexts, one engine
        second.close()
        assert len(_ENGINES) == 1  # still used by `runner`
        frame = runner.frame_buffer(*image.shape[:2])
        frame[:] = image
        for source in (image, frame, frame[5:, 7:]):
            detections = runner.infer(source)
            reference, box = preprocess(np.ascontiguousarray(source), SPEC_256)
            np.testing.assert_array_equal(trt.seen_inputs[-1], reference.astype(io_dtype))
            expected = postprocess(*head, anchors, box, config)
            assert_same_detections((detections.xyxy, detections.scores, detections.class_ids), expected)
            assert detections.class_names == SPEC_256.classes
        assert set(runner.last_timing) == {"preprocess_ms", "inference_ms", "postprocess_ms", "total_ms"}
        out_logits, out_boxes = runner.run(reference[None])
        assert out_logits.shape == (1, *logits.shape) and out_logits.dtype == np.float32
        np.testing.assert_array_equal(out_boxes[0], head[1])

        errors = []
        thread = threading.Thread(target=lambda: errors.append(error_of(lambda: runner.infer(image))))
        thread.start()
        thread.join()
        assert "one runner per thread" in errors[0]
        with pytest.raises(FacemaskError, match="BGR uint8"):
            runner.infer(image[:, :, 0])
    assert not _ENGINES and not fake_cuda.live and not fake_cuda.stack
    with pytest.raises(FacemaskError, match="closed"):
        runner.infer(image)


def test_tensorrt_runner_refuses_an_engine_from_another_gpu(fake_cuda, fake_engine, monkeypatch) -> None:
    import sys

    from facemask_sdk.backends.tensorrt import TensorRTRunner, _ENGINES
    from facemask_sdk.errors import ModelFileError

    anchors = generate_anchors(SPEC_256)
    trt = FakeTensorRT(SPEC_256, np.zeros((len(anchors), 3), np.float32), np.zeros((len(anchors), 4), np.float32))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(fake_cuda.Device, "name", lambda self: "NVIDIA H100 80GB HBM3")
    with pytest.raises(ModelFileError, match="GPU 'Orin'"):
        TensorRTRunner(fake_engine)
    assert trt.deserialized == 0 and not _ENGINES and not fake_cuda.live

    fake_engine.write_bytes(b"corrupt")
    monkeypatch.setattr(fake_cuda.Device, "name", lambda self: "Orin")
    with pytest.raises(ModelFileError, match="could not load"):
        TensorRTRunner(fake_engine)
    assert not _ENGINES and not fake_cuda.live and not fake_cuda.stack


def test_stage_combinations_on_one_engine(fake_cuda, fake_engine, monkeypatch) -> None:
    """The Detector's two compositions over the same TensorRT runner give the same detections: CUDA pre
    + TensorRT + CUDA post (`DeviceStages`, the product path) and NumPy pre + TensorRT + NumPy post
    (`HostStages`, the debugging path that checks the kernels against the reference)."""
    import sys

    from facemask_sdk.backends.tensorrt import TensorRTRunner
    from facemask_sdk.detector import DeviceStages, HostStages

    rng = np.random.default_rng(4)
    logits, regressions = head_outputs(rng, len(generate_anchors(SPEC_256)), SPEC_256.num_classes, 200)
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT(SPEC_256, logits, regressions))
    config = PostprocessConfig(score_threshold=0.3, max_detections=50)
    image = cv2.imread(str(SAMPLE_IMAGES[0]), cv2.IMREAD_COLOR)
    with TensorRTRunner(fake_engine, config) as runner:
        (device,), device_seconds = DeviceStages(runner).detect([image])
        (host,), host_seconds = HostStages(runner, config).detect([image])
    assert len(device) > 0 and len(device_seconds) == len(host_seconds) == 3
    assert_same_detections((device.xyxy, device.scores, device.class_ids), (host.xyxy, host.scores, host.class_ids))
