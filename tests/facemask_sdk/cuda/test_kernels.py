"""The CUDA kernels (facemask_sdk/cuda/kernels.cu) without a GPU: `nvcc -ptx` compiles them, and a CPU
emulator runs them against NumPy.

1. `nvcc -ptx` for Jetson Orin (sm_87) and Hopper (sm_90) with the plans' options: no errors, no
   warnings, and every kernel's PTX parameter list matches the argument formats pycuda packs
   (`plans.KERNEL_ARGS`).
2. The emulator (the `emulator` fixture: tests/facemask_sdk/conftest.py) compiles `kernels.cu` as C++
   with a small shim: each block's threads are fibers (ucontext) switched at `__syncthreads()`,
   `__shared__` is `static`, atomics are plain (fibers never run concurrently). It runs the *same
   launch plans* as the GPU path (`plan_letterbox`, `plan_decode`) and checks the results against the
   NumPy reference: the letterbox bit for bit against cv2, decoding/top-K/NMS exactly against
   `facemask_sdk.postprocess`.
   It also fails a launch whose threads do not all reach the same `__syncthreads()`.
   What it cannot check: real parallel races, warp scheduling, the inline PTX of the half-precision
   conversions (it uses the portable C++ path of `fm_f32_to_f16`) and timing; tests/gpu covers those.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemask_sdk.anchors import generate_anchors
from facemask_sdk.cuda.plans import (
    KERNEL_ARGS,
    KERNEL_SOURCE,
    NVCC_OPTIONS,
    DecodeSettings,
    check_frame,
    decode_buffer_specs,
    output_specs,
    plan_decode,
    plan_letterbox,
)
from facemask_sdk.postprocess import PostprocessConfig, batched_nms, decode_boxes, postprocess, top_k_indices
from facemask_sdk.preprocess import Letterbox, preprocess
from facemask_sdk.spec import INCEPTION_MEAN_255, INCEPTION_STD_255, ModelSpec

REPO = Path(__file__).resolve().parents[3]
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
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert not (result.stdout + result.stderr).strip(), f"nvcc warnings:\n{result.stderr}"
    ptx = out.read_text()
    entries = dict(re.findall(r"\.visible \.entry (\w+)\(([^)]*)\)", ptx))
    assert set(entries) == set(KERNEL_ARGS), "kernels.cu and plans.KERNEL_ARGS list different kernels"
    for name, fmt in KERNEL_ARGS.items():
        ptx_types = re.findall(r"\.param (\.\w+)", entries[name])
        assert ptx_types == [PTX_TYPES[c] for c in fmt], f"{name}: PTX params {ptx_types} vs format {fmt!r}"


# --- 2. CPU emulator (the `emulator` fixture: tests/facemask_sdk/conftest.py) -----------------------


def ptr(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


class EmulatedDecoder:
    """`CudaKernels`'s decoding half on the emulator, with buffers sized by the same functions."""

    def __init__(self, emulator, spec: ModelSpec, config: PostprocessConfig, head_dtype=np.float32):
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

    def run(self, logits: np.ndarray, box_codes: np.ndarray, letterbox: Letterbox):
        self.buffers["logits"] = np.ascontiguousarray(logits, self.head_dtype)
        self.buffers["box_codes"] = np.ascontiguousarray(box_codes, self.head_dtype)
        self.buffers["anchors"] = self.anchors
        pointers = {name: ptr(array) for name, array in self.buffers.items()}
        for launch in plan_decode(
            pointers, self.num_anchors, self.num_classes, letterbox, self.settings, self.head_dtype
        ):
            self.emulator.run(launch)
        n = int(self.buffers["out_count"][0])
        return (
            self.buffers["out_boxes"][:n].copy(),
            self.buffers["out_scores"][:n].copy(),
            self.buffers["out_classes"][:n].astype(np.int64),
        )

    def candidates(self) -> dict:
        m = int(self.buffers["counters"][1])
        b = self.buffers
        return {
            "num_candidates": int(b["counters"][0]),
            "boxes": b["boxes"][: 4 * m].reshape(m, 4),
            "scores": b["scores"][:m],
            "class_ids": b["classes"][:m].astype(np.int64),
            "flat_index": b["flat_index"][:m].astype(np.int64),
        }


def emulated_letterbox(emulator, frame: np.ndarray, spec: ModelSpec, dtype=np.float32):
    frame = check_frame(frame)
    out = np.full((3, *spec.image_size), np.nan, dtype)
    launch, letterbox = plan_letterbox(ptr(frame), frame.shape[:2], frame.strides[0], ptr(out), dtype, spec)
    emulator.run(launch)
    return out, letterbox


# --- emulator: plumbing -----------------------------------------------------------------------------


def test_kernel_signatures_match_pycuda_formats(emulator) -> None:
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
    [
        ((96, 160), (128, 128)),
        ((300, 41), (128, 256)),
        ((37, 53), (128, 128)),
        ((128, 128), (128, 128)),
        ((256, 256), (128, 128)),
        ((1, 1), (128, 128)),
        ((257, 130), (256, 128)),
    ],
)
def test_letterbox_is_bit_exact_with_opencv(emulator, frame_hw, input_hw) -> None:
    rng = np.random.default_rng(sum(frame_hw) + sum(input_hw))
    spec = ModelSpec("tf_efficientdet_d0", input_hw)
    frame = rng.integers(0, 256, (*frame_hw, 3), dtype=np.uint8)
    out, letterbox = emulated_letterbox(emulator, frame, spec)
    reference, ref_letterbox = preprocess(frame, spec)
    assert letterbox == ref_letterbox
    np.testing.assert_array_equal(out, reference)


def test_letterbox_on_real_images_and_a_pitched_crop(emulator) -> None:
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


def test_letterbox_half_output_is_the_rounded_float(emulator) -> None:
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (90, 200, 3), dtype=np.uint8)
    out, _ = emulated_letterbox(emulator, frame, SPEC_128, np.float16)
    reference, _ = preprocess(frame, SPEC_128)
    np.testing.assert_array_equal(out, reference.astype(np.float16))


def test_half_conversions_match_numpy(emulator) -> None:
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
    floats = np.concatenate(
        [
            rng.normal(0, 1, 3000),
            rng.normal(0, 3e4, 2000),
            rng.uniform(-1e-4, 1e-4, 2000),
            rng.uniform(-1e-7, 1e-7, 1000),
            expected[np.isfinite(expected)][::13],  # exact halves
            (expected[np.isfinite(expected)][::17].astype(np.float64) * (1 + 2.0**-11)),  # ties between halves
            [65504.0, 65519.99, 65520.0, 1e9, -1e9, np.inf, -np.inf, 0.0, -0.0, 2.0**-25, 2.0**-24, 2.0**-26],
        ]
    ).astype(np.float32)
    got = np.array([to_half(float(f)) for f in floats], np.uint16)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got, floats.astype(np.float16).view(np.uint16))
    assert to_half(float("nan")) & 0x7C00 == 0x7C00 and to_half(float("nan")) & 0x3FF


# --- emulator: decoding, top-K, NMS ------------------------------------------------------------------
# (`head_outputs` and `assert_same_detections`: fixtures of tests/facemask_sdk/conftest.py)


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
def test_decode_nms_matches_numpy(emulator, case: str, assert_same_detections, head_outputs) -> None:
    frame_hw, config, positives = CASES[case]
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    decoder = EmulatedDecoder(emulator, SPEC_128, config)
    logits, box_codes = head_outputs(rng, decoder.num_anchors, decoder.num_classes, positives)
    letterbox = Letterbox.fit(frame_hw, SPEC_128.image_size)
    got = decoder.run(logits, box_codes, letterbox)
    expected = postprocess(logits, box_codes, decoder.anchors, letterbox, config)
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
    ref_boxes = letterbox.to_original(decode_boxes(box_codes[anchors_of], decoder.anchors[anchors_of]))
    np.testing.assert_allclose(state["boxes"], ref_boxes, rtol=0, atol=1e-3)


def test_all_pairs_above_threshold_uses_radix_select(emulator, assert_same_detections) -> None:
    """Every (anchor, class) passes: 9207 candidates for top_k = 1000, ties included."""
    config = PostprocessConfig(score_threshold=0.3, top_k=1000, max_detections=100)
    decoder = EmulatedDecoder(emulator, SPEC_128, config)
    rng = np.random.default_rng(7)
    logits = rng.normal(2.0, 1.0, (decoder.num_anchors, decoder.num_classes)).astype(np.float32)
    logits.reshape(-1)[rng.choice(logits.size, 3000, replace=False)] = np.float32(2.5)  # ties at the cut
    logits[5:9] = np.float32(30.0)  # sigmoid saturates to 1.0: ranked by logit, then by index
    box_codes = rng.normal(0, 0.2, (decoder.num_anchors, 4)).astype(np.float32)
    letterbox = Letterbox.fit((200, 300), SPEC_128.image_size)
    got = decoder.run(logits, box_codes, letterbox)
    assert_same_detections(got, postprocess(logits, box_codes, decoder.anchors, letterbox, config))
    flat = logits.reshape(-1)
    np.testing.assert_array_equal(decoder.candidates()["flat_index"], top_k_indices(flat, 1000))


def test_half_head_outputs(emulator, assert_same_detections, head_outputs) -> None:
    config = PostprocessConfig()
    decoder = EmulatedDecoder(emulator, SPEC_128, config, head_dtype=np.float16)
    rng = np.random.default_rng(11)
    logits, box_codes = head_outputs(rng, decoder.num_anchors, decoder.num_classes, 200)
    logits, box_codes = logits.astype(np.float16), box_codes.astype(np.float16)
    letterbox = Letterbox.fit((300, 400), SPEC_128.image_size)
    got = decoder.run(logits, box_codes, letterbox)
    expected = postprocess(logits.astype(np.float32), box_codes.astype(np.float32), decoder.anchors, letterbox, config)
    assert_same_detections(got, expected)


@pytest.mark.parametrize("class_agnostic", [True, False], ids=["one-box-per-face", "class-aware"])
def test_nms_keep_sets_on_crowded_boxes(emulator, class_agnostic: bool, head_outputs) -> None:
    """Many near-duplicate boxes of all classes: the kept set equals batched_nms exactly."""
    config = PostprocessConfig(
        score_threshold=0.2, iou_threshold=0.5, max_detections=1000, top_k=2000, class_agnostic=class_agnostic
    )
    decoder = EmulatedDecoder(emulator, SPEC_128, config)
    rng = np.random.default_rng(5)
    logits, box_codes = head_outputs(rng, decoder.num_anchors, decoder.num_classes, 1800, spread=1.0)
    letterbox = Letterbox.fit((128, 128), SPEC_128.image_size)
    boxes, scores, classes = decoder.run(logits, box_codes, letterbox)
    state = decoder.candidates()
    groups = np.zeros_like(state["class_ids"]) if class_agnostic else state["class_ids"]
    keep = batched_nms(state["boxes"], state["scores"], groups, config.iou_threshold)
    np.testing.assert_array_equal(classes, state["class_ids"][keep])
    np.testing.assert_array_equal(boxes, state["boxes"][keep])
    assert 100 < len(keep) < len(state["scores"])  # NMS did real work


def test_non_finite_and_empty_detections_are_dropped_like_numpy(emulator, assert_same_detections, head_outputs) -> None:
    """NaN/inf head outputs and boxes clipped to nothing never become detections, in both paths."""
    config = PostprocessConfig(score_threshold=0.3)
    decoder = EmulatedDecoder(emulator, SPEC_128, config)
    rng = np.random.default_rng(21)
    logits, box_codes = head_outputs(rng, decoder.num_anchors, decoder.num_classes, 300)
    hot = np.flatnonzero((logits > 0).any(1))
    box_codes[hot[:20]] = np.nan
    box_codes[hot[20:40], 2:] = np.float32(np.inf)
    box_codes[hot[40:60], 0] = np.float32(1e4)  # centre far outside the image: clipped to an empty box
    logits[hot[60:65]] = np.float32(np.inf)  # score 1.0 with a finite box: a valid detection
    letterbox = Letterbox.fit((100, 140), SPEC_128.image_size)
    got = decoder.run(logits, box_codes, letterbox)
    expected = postprocess(logits, box_codes, decoder.anchors, letterbox, config)
    assert_same_detections(got, expected)
    boxes, scores, _ = expected
    assert len(boxes) and np.isfinite(boxes).all() and np.isfinite(scores).all()
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()


# --- the sizes kernels.cu shares with the plans -----------------------------------------------------


def test_kernels_take_their_sizes_from_the_plans_only(tmp_path: Path) -> None:
    """kernels.cu defines none of the shared sizes itself: without the plans' -D definitions it does
    not compile, so a size can only change in `KERNEL_CONSTANTS` (buffers and kernels together)."""
    from facemask_sdk.cuda.plans import KERNEL_CONSTANTS

    source = KERNEL_SOURCE.read_text()
    for name in KERNEL_CONSTANTS:
        assert not re.search(rf"#define\s+{name}\b", source), name
    if CXX is None:
        pytest.skip("g++ is not installed (needed to preprocess kernels.cu)")
    probe = tmp_path / "probe.cpp"
    probe.write_text('#define __global__\n#include "kernels.cu"\n')
    result = subprocess.run(
        [CXX, "-E", f"-I{KERNEL_SOURCE.parent}", str(probe)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "KERNEL_DEFINES" in result.stderr
