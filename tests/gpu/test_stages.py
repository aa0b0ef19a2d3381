"""Every stage combination of `Detector` on a real GPU against the all-NumPy pipeline (tests/gpu/run.sh).

Skipped without pycuda or a CUDA GPU (tests/gpu/conftest.py). With ONNX Runtime as the network (no TensorRT needed): CUDA
pre-processing and/or CUDA post-processing around it. With TensorRT (an engine in FACEMASK_TEST_ENGINE):
the four pre x post combinations around the engine, the fused zero-copy one included. The reference is
the same network with NumPy pre- and post-processing; the CUDA letterbox is within 1 LSB of cv2's, so
boxes may move by a fraction of a pixel, and CUDA decoding on the same head outputs is exact.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from facemask_sdk import Detector
from facemask_sdk.image_io import read_image

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[2]
SAMPLE_IMAGES = sorted((REPO / "samples" / "images").glob("*.png"))
SHIPPED_ONNX = REPO / "models" / "facemask.onnx"
COMBINATIONS = [("numpy", "cuda"), ("cuda", "numpy"), ("cuda", "cuda")]


def _detections(model: Path, preprocess: str, postprocess: str) -> list:
    with Detector(model, preprocess=preprocess, postprocess=postprocess, score_threshold=0.05) as detector:
        assert detector.stages == {"preprocess": preprocess, "postprocess": postprocess}
        results = [detector(read_image(path)) for path in SAMPLE_IMAGES]
        assert set(detector.last_timing) >= {"preprocess_ms", "inference_ms", "postprocess_ms"}
    return results


def _assert_same(got: list, reference: list, exact_input: bool) -> None:
    for detections, expected in zip(got, reference):
        assert len(detections) == len(expected)
        np.testing.assert_array_equal(detections.class_ids, expected.class_ids)
        np.testing.assert_allclose(detections.xyxy, expected.xyxy, atol=1e-3 if exact_input else 0.5)
        np.testing.assert_allclose(detections.scores, expected.scores, atol=1e-5 if exact_input else 2e-3)


@pytest.mark.parametrize("preprocess, postprocess", COMBINATIONS)
def test_cuda_stages_around_onnxruntime(preprocess: str, postprocess: str) -> None:
    reference = _detections(SHIPPED_ONNX, "numpy", "numpy")
    assert sum(len(d) for d in reference) > 0, "the shipped model finds faces in the samples"
    _assert_same(_detections(SHIPPED_ONNX, preprocess, postprocess), reference, exact_input=preprocess == "numpy")


@pytest.mark.trt
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed")
@pytest.mark.parametrize("preprocess, postprocess", COMBINATIONS)
def test_stage_combinations_around_tensorrt(preprocess: str, postprocess: str) -> None:
    engine = os.environ.get("FACEMASK_TEST_ENGINE")
    if not engine:
        pytest.skip("set FACEMASK_TEST_ENGINE to an engine built on this device")
    reference = _detections(Path(engine), "numpy", "numpy")
    _assert_same(_detections(Path(engine), preprocess, postprocess), reference, exact_input=preprocess == "numpy")
