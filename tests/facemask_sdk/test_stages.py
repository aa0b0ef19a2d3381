"""The stages `Detector` composes (facemask_sdk.stages): every combination of NumPy or CUDA pre-processing,
ONNX Runtime or TensorRT, NumPy or CUDA post-processing, against the NumPy reference.

Here the CUDA stages run `kernels.cu` on the CPU emulator through the stand-in pycuda (`fake_cuda`), and
TensorRT is the stand-in `fake_tensorrt` (its 'network' writes fixed head outputs) on the same memory:
every line of the composition, the transfers between host and device and the Python side of the CUDA
stages runs; tests/gpu/test_stages.py runs the same combinations on a real GPU.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemask_sdk import Detector
from facemask_sdk.anchors import generate_anchors
from facemask_sdk.errors import FacemaskError
from facemask_sdk.postprocess import PostprocessConfig, postprocess, postprocess_detections
from facemask_sdk.preprocess import preprocess
from facemask_sdk.spec import ModelSpec
from facemask_sdk.stages import NumpyPostprocess, NumpyPreprocess, Pipeline

REPO = Path(__file__).resolve().parents[2]
SAMPLE_IMAGES = sorted((REPO / "samples" / "images").glob("*.png"))
SPEC_256 = ModelSpec("tf_efficientdet_d0", (256, 256))  # fake_engine's
COMBINATIONS = [("numpy", "numpy"), ("numpy", "cuda"), ("cuda", "numpy"), ("cuda", "cuda")]


@pytest.mark.parametrize(
    "pre, post, mapped", [(pre, post, True) for pre, post in COMBINATIONS] + [("cuda", "cuda", False)]
)
def test_every_combination_around_tensorrt(
    fake_tensorrt, fake_cuda, fake_engine, pre, post, mapped, head_outputs, assert_same_detections
) -> None:
    from facemask_sdk.backends.tensorrt import _ENGINES

    fake_cuda.attributes["INTEGRATED"] = int(mapped)  # mapped frames on Jetson, copies on a discrete GPU
    anchors = generate_anchors(SPEC_256)
    logits, box_codes = head_outputs(np.random.default_rng(4), len(anchors), SPEC_256.num_classes, 300)
    trt = fake_tensorrt(logits, box_codes)
    config = PostprocessConfig(score_threshold=0.3, max_detections=50)
    image = cv2.imread(str(SAMPLE_IMAGES[1]), cv2.IMREAD_COLOR)
    # one network call per frame: the random heads' large boxes would ask for the close-up check's second pass
    options = {"score_threshold": 0.3, "max_detections": 50, "closeup_check": False}
    with Detector(fake_engine, preprocess=pre, postprocess=post, **options) as detector:
        assert detector.backend == "tensorrt" and detector.stages == {"preprocess": pre, "postprocess": post}
        frame = detector.frame_buffer(*image.shape[:2])
        frame[:] = image
        for source in (image, frame, frame[5:, 7:]):
            detections = detector(source)
            reference, letterbox = preprocess(np.ascontiguousarray(source), SPEC_256)
            np.testing.assert_array_equal(trt.seen_inputs[-1], reference)  # the engine saw the reference input
            expected = postprocess(logits, box_codes, anchors, letterbox, config)
            assert len(expected[0]) > 0
            assert_same_detections((detections.xyxy, detections.scores, detections.class_ids), expected)
            assert detections.class_names == SPEC_256.classes
        assert set(detector.last_timing) >= {"preprocess_ms", "inference_ms", "postprocess_ms", "total_ms"}
    assert not _ENGINES and not fake_cuda.live and not fake_cuda.stack  # engine, buffers and contexts freed


def test_the_fused_path_is_timed_by_cuda_events_and_owned_by_one_thread(
    fake_tensorrt, fake_cuda, fake_engine, head_outputs, error_of
) -> None:
    logits, box_codes = head_outputs(np.random.default_rng(5), len(generate_anchors(SPEC_256)), 3, 50)
    fake_tensorrt(logits, box_codes, io_dtype=np.float16)
    image = cv2.imread(str(SAMPLE_IMAGES[0]), cv2.IMREAD_COLOR)
    with Detector(fake_engine, closeup_check=False) as detector:  # one network call per frame
        assert detector.stages == {"preprocess": "cuda", "postprocess": "cuda"}  # the network's own side
        detector(image)
        timing = detector.last_timing
        assert timing["inference_ms"] == timing["postprocess_ms"] == 0.25  # fake_cuda's event interval
        errors = []
        thread = threading.Thread(target=lambda: errors.append(error_of(lambda: detector(image))))
        thread.start()
        thread.join()
        assert "belongs to the thread that created it" in errors[0]
    assert not fake_cuda.live


def test_the_closeup_check_runs_its_second_pass_through_the_cuda_stages(
    fake_tensorrt, fake_cuda, fake_engine, head_outputs
) -> None:
    """The shrunk frame is an ordinary array: the kernels take it as they take any frame, and the engine
    sees the reference input of the shrunk frame; the classes are those `take_closeup_classes` gives."""
    from facemask_sdk.closeups import DEFAULT_CLOSEUP_CHECK, fill_colour, shrink_frame, take_closeup_classes

    anchors = generate_anchors(SPEC_256)
    logits, box_codes = head_outputs(np.random.default_rng(4), len(anchors), SPEC_256.num_classes, 300)
    trt = fake_tensorrt(logits, box_codes)
    image = cv2.imread(str(SAMPLE_IMAGES[1]), cv2.IMREAD_COLOR)
    config = PostprocessConfig(score_threshold=0.3, max_detections=50)
    with Detector(fake_engine, score_threshold=0.3, max_detections=50) as detector:
        detections = detector(image)
        assert detector.last_timing["closeup_checks"] == 1 and len(trt.seen_inputs) == 2
        shrunk = shrink_frame(image, DEFAULT_CLOSEUP_CHECK, fill_colour(SPEC_256.mean))
        reference, shrunk_letterbox = preprocess(shrunk, SPEC_256)
        np.testing.assert_array_equal(trt.seen_inputs[-1], reference)
    first = postprocess_detections(logits, box_codes, anchors, preprocess(image, SPEC_256)[1], config, SPEC_256.classes)
    second = postprocess_detections(logits, box_codes, anchors, shrunk_letterbox, config, SPEC_256.classes)
    expected = take_closeup_classes(first, second, image.shape[:2], DEFAULT_CLOSEUP_CHECK)
    assert (expected.class_ids != first.class_ids).any()  # the check changed something to compare
    np.testing.assert_array_equal(detections.class_ids, expected.class_ids)
    np.testing.assert_allclose(detections.xyxy, expected.xyxy, atol=1e-3)
    assert not fake_cuda.live


@pytest.mark.parametrize("pre, post", COMBINATIONS[1:])
def test_cuda_stages_around_onnxruntime(fake_cuda, tiny_onnx, sample_images, pre, post, assert_same_detections) -> None:
    """ONNX Runtime on the host with the CUDA kernels: the input tensor is read back from the device
    before the network, the head outputs copied to it after; the detections are the reference's."""
    options = {"score_threshold": 0.05, "max_detections": 100}  # a few dozen per image from the random model
    with Detector(tiny_onnx, **options) as reference:
        expected = reference.detect_batch(sample_images)
    with Detector(tiny_onnx, preprocess=pre, postprocess=post, **options) as detector:
        assert detector.stages == {"preprocess": pre, "postprocess": post}
        got = detector.detect_batch(sample_images)
    assert sum(len(d) for d in expected) > 0
    for g, e in zip(got, expected):
        assert_same_detections((g.xyxy, g.scores, g.class_ids), (e.xyxy, e.scores, e.class_ids))
    assert not fake_cuda.live and not fake_cuda.stack


def test_cuda_stages_on_a_machine_without_pycuda_are_one_clear_error(tiny_onnx) -> None:
    """Here pycuda is absent (or, with it, the GPU): the request names what is missing."""
    pytest.importorskip("onnxruntime")
    if importlib.util.find_spec("pycuda") is not None:
        pytest.skip("pycuda is installed here; the refusal is for machines without it")
    with pytest.raises(FacemaskError, match="pycuda and an NVIDIA GPU"):
        Detector(tiny_onnx, postprocess="cuda")
    with Detector(tiny_onnx) as detector:
        assert detector.stages == {"preprocess": "numpy", "postprocess": "numpy"}


@pytest.mark.parametrize("kind", ["gpu", "NumPy", ""])
def test_unknown_stage_kinds_are_refused(tiny_onnx, kind) -> None:
    with pytest.raises(FacemaskError, match="choose auto, numpy or cuda"):
        Detector(tiny_onnx, preprocess=kind)


def test_a_device_stage_without_device_buffers_is_refused(tiny_onnx) -> None:
    from facemask_sdk.backends.onnxrt import OnnxRuntimeRunner

    class DeviceSidePostprocess(NumpyPostprocess):
        side = "device"

    with OnnxRuntimeRunner(tiny_onnx) as runner:
        with pytest.raises(FacemaskError, match="needs the device buffers"):
            Pipeline(NumpyPreprocess(runner.spec), runner, DeviceSidePostprocess(runner.spec, PostprocessConfig()))


def test_a_composition_that_fails_halfway_frees_what_it_built(
    fake_tensorrt, fake_cuda, fake_engine, head_outputs
) -> None:
    """TensorRT refuses the device buffers' addresses after the engine, its context and the buffers exist:
    the error says so, and the engine, every allocation and every pushed context are gone."""
    from facemask_sdk.backends.tensorrt import _ENGINES
    from facemask_sdk.errors import InternalError

    trt = fake_tensorrt(*head_outputs(np.random.default_rng(6), len(generate_anchors(SPEC_256)), 3, 10))
    trt.refuse_addresses = True
    with pytest.raises(InternalError, match="refused the address"):
        Detector(fake_engine)
    assert trt.deserialized == 1 and not _ENGINES and not fake_cuda.live and not fake_cuda.stack
