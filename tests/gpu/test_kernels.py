"""The CUDA kernels on a real GPU against the NumPy reference (tests/gpu/run.sh runs this file).

Skipped without pycuda or a CUDA GPU (tests/gpu/conftest.py). What is checked, kernel by kernel, through `CudaKernels`:
- letterbox: within 1 LSB of cv2's uint8 resize before normalisation (|diff| * std <= 1 + eps; the
  CPU emulator shows it bit-exact, so any 1-LSB pixel here is reported), float32 and float16 outputs,
  mapped and copied frames, pitched crops, real images;
- decoding: the candidates after top-K are the reference's (same flat indices, same order) and their
  boxes are within 1e-3 px of `decode_boxes` + `Letterbox.to_original`;
- NMS: the kept detections equal `postprocess` (same classes and order, scores within 1e-6, boxes
  within 1e-3 px), including D0's 49,104 anchors x 3 classes with ~100k candidates (radix select);
- determinism, and misuse (closed CudaKernels, other thread, bad frames) raising `FacemaskError`.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cuda_topk_probe as probe  # tests/helpers (pytest's pythonpath)
import cv2
import numpy as np
import pytest

from facemask_sdk.anchors import generate_anchors
from facemask_sdk.cuda import CudaKernels
from facemask_sdk.errors import FacemaskError
from facemask_sdk.postprocess import PostprocessConfig, decode_boxes, postprocess, top_k_indices
from facemask_sdk.preprocess import Letterbox, preprocess
from facemask_sdk.spec import ModelSpec

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[2]
SAMPLE_IMAGES = sorted((REPO / "samples" / "images").glob("*.png"))
D0 = ModelSpec("tf_efficientdet_d0", (512, 512))

_KERNELS: dict[tuple, CudaKernels] = {}


def shared_kernels(
    config: PostprocessConfig | None = None,
    *,
    mapped: bool = True,
    input_dtype=np.float32,
    head_dtype=np.float32,
    spec: ModelSpec = D0,
) -> CudaKernels:
    """One set of kernels per settings for the whole module (compiling and allocating once)."""
    config = config or PostprocessConfig()
    key = (config, mapped, np.dtype(input_dtype).str, np.dtype(head_dtype).str, spec)
    if key not in _KERNELS:
        _KERNELS[key] = CudaKernels(spec, config, mapped=mapped, input_dtype=input_dtype, head_dtype=head_dtype)
    return _KERNELS[key]


@pytest.fixture(scope="module", autouse=True)
def _close_kernels():
    yield
    for kernels in _KERNELS.values():
        kernels.close()
    _KERNELS.clear()


# --- letterbox ----------------------------------------------------------------------------------------


def letterbox_gap(out: np.ndarray, reference: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """|GPU - reference| in uint8 steps before normalisation."""
    std = np.asarray(spec.std, np.float32)[:, None, None]
    return np.abs(out.astype(np.float32) - reference) * std


@pytest.mark.parametrize("mapped", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("frame_hw", [(1080, 1920), (480, 640), (37, 53), (512, 512), (1024, 1024), (2000, 300)])
def test_letterbox_matches_opencv(frame_hw, dtype, mapped: bool) -> None:
    rng = np.random.default_rng(frame_hw[0] * 7 + frame_hw[1])
    frame = rng.integers(0, 256, (*frame_hw, 3), dtype=np.uint8)
    kernels = shared_kernels(mapped=mapped, input_dtype=dtype)
    letterbox = kernels.preprocess(frame)
    kernels.synchronize()
    out = kernels.download_input()
    reference, ref_letterbox = preprocess(frame, D0)
    assert letterbox == ref_letterbox and out.dtype == dtype
    gap = letterbox_gap(out, reference, D0)
    half_rounding = 0.0 if dtype == np.float32 else np.abs(reference) * np.asarray(D0.std)[:, None, None] * 2.0**-11
    assert np.all(gap <= 1.0 + 1e-3 + half_rounding), f"max gap {gap.max():.4f} uint8 steps"
    if dtype == np.float32:
        assert (gap > 1e-3).mean() < 1e-3, f"{(gap > 1e-3).mean():.2%} of values off by 1 LSB (expected bit-exact)"


def test_letterbox_real_images_zero_copy_and_crops() -> None:
    kernels = shared_kernels()
    for path in SAMPLE_IMAGES:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        frame = kernels.frame_buffer(*image.shape[:2])
        frame[:] = image
        for source in (frame, frame[3:-9, 5:-2]):
            kernels.preprocess(source)
            kernels.synchronize()
            reference, _ = preprocess(np.ascontiguousarray(source), D0)
            assert letterbox_gap(kernels.download_input(), reference, D0).max() <= 1.0 + 1e-3


# --- decoding, top-K, NMS --------------------------------------------------------------------------------


def head_outputs(rng: np.random.Generator, positives: int, num_anchors: int = 49104, num_classes: int = 3):
    logits = rng.normal(-6.0, 1.0, (num_anchors, num_classes)).astype(np.float32)
    hot = rng.choice(num_anchors * num_classes, positives, replace=False)
    logits.reshape(-1)[hot] = rng.uniform(-1.0, 6.0, positives).astype(np.float32)
    box_codes = rng.normal(0.0, 0.3, (num_anchors, 4)).astype(np.float32)
    return logits, box_codes


def assert_same_detections(got, expected) -> None:
    (boxes, scores, classes), (ref_boxes, ref_scores, ref_classes) = got, expected
    assert len(boxes) == len(ref_boxes), f"{len(boxes)} detections, reference {len(ref_boxes)}"
    np.testing.assert_array_equal(classes, ref_classes)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(boxes, ref_boxes, rtol=0, atol=1e-3)


def run(kernels: CudaKernels, logits, box_codes, letterbox: Letterbox):
    kernels.upload_head(logits, box_codes)
    kernels.decode_nms(letterbox)
    kernels.synchronize()
    return kernels.results()


CASES = {
    "realistic": (PostprocessConfig(), 300, (1080, 1920)),
    "crowded": (PostprocessConfig(score_threshold=0.2, max_detections=300), 20000, (480, 640)),
    "random_logits": (PostprocessConfig(), None, (720, 1280)),  # ~100k candidates: radix select
    "top_k_small": (PostprocessConfig(score_threshold=0.05, top_k=64, max_detections=64), 5000, (512, 512)),
    "max_top_k": (PostprocessConfig(score_threshold=0.05, top_k=16384, max_detections=1000), 30000, (300, 900)),
}


@pytest.mark.parametrize("mapped", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_decode_nms_matches_numpy(case: str, mapped: bool) -> None:
    config, positives, frame_hw = CASES[case]
    rng = np.random.default_rng(len(case))
    if positives is None:
        logits = rng.normal(0.0, 1.0, (49104, 3)).astype(np.float32)
        box_codes = rng.normal(0.0, 0.3, (49104, 4)).astype(np.float32)
    else:
        logits, box_codes = head_outputs(rng, positives)
    kernels = shared_kernels(config, mapped=mapped)
    letterbox = Letterbox.fit(frame_hw, D0.image_size)
    anchors = generate_anchors(D0)
    got = run(kernels, logits, box_codes, letterbox)
    assert_same_detections(got, postprocess(logits, box_codes, anchors, letterbox, config))

    flat = logits.reshape(-1)
    passing = np.flatnonzero(flat > config.logit_threshold)
    chosen = passing[top_k_indices(flat[passing], config.top_k)]
    state = probe.candidates(kernels)
    assert state["num_candidates"] == len(passing)
    np.testing.assert_array_equal(state["flat_index"], chosen)
    ids = chosen // 3
    np.testing.assert_allclose(
        state["boxes"], letterbox.to_original(decode_boxes(box_codes[ids], anchors[ids])), atol=1e-3
    )

    again = run(kernels, logits, box_codes, letterbox)  # deterministic despite atomics
    for a, b in zip(got, again):
        np.testing.assert_array_equal(a, b)


def test_half_head_outputs() -> None:
    config = PostprocessConfig()
    rng = np.random.default_rng(9)
    logits, box_codes = head_outputs(rng, 500)
    logits, box_codes = logits.astype(np.float16), box_codes.astype(np.float16)
    letterbox = Letterbox.fit((1080, 1920), D0.image_size)
    got = run(shared_kernels(config, head_dtype=np.float16), logits, box_codes, letterbox)
    expected = postprocess(
        logits.astype(np.float32), box_codes.astype(np.float32), generate_anchors(D0), letterbox, config
    )
    assert_same_detections(got, expected)


def test_no_candidates_gives_no_detections() -> None:
    kernels = shared_kernels()
    logits = np.full((49104, 3), -20.0, np.float32)
    letterbox = Letterbox.fit((100, 100), D0.image_size)
    boxes, scores, classes = run(kernels, logits, np.zeros((49104, 4), np.float32), letterbox)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and classes.shape == (0,)


# --- lifecycle -----------------------------------------------------------------------------------------


def test_misuse_fails_loudly() -> None:
    kernels = CudaKernels(D0)
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 4), np.uint8)):
        with pytest.raises(FacemaskError, match="BGR uint8"):
            kernels.preprocess(bad)
    errors = []

    def other_thread() -> None:
        try:
            kernels.preprocess(np.zeros((10, 10, 3), np.uint8))
        except FacemaskError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert errors and "thread" in errors[0]
    kernels.close()
    with pytest.raises(FacemaskError, match="closed"):
        kernels.preprocess(np.zeros((10, 10, 3), np.uint8))
