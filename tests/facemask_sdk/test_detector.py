"""`Detector` on ONNX Runtime: agreement with effdet's DetBenchPredict, bad inputs, model files, lifecycle."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemask_sdk import Detector
from facemask_sdk.errors import FacemaskError, ModelFileError
from facemask_sdk.spec import METADATA_KEY

pytest.importorskip("onnxruntime")

LOW_THRESHOLD = 0.05
"""The random tiny model scores around 0.01-0.1: this keeps a few dozen detections per sample image."""


# -- agreement with effdet ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_runner(tiny_checkpoint: Path):
    from facemask_tools.training.baseline import TorchRunner

    return TorchRunner(tiny_checkpoint, score_threshold=LOW_THRESHOLD, max_detections=100)


class _TorchHeads:
    """A host network stage that returns PyTorch's head outputs, to check the Detector's own pre- and
    post-processing exactly."""

    side = "host"

    def __init__(self, checkpoint: Path) -> None:
        from facemask_tools.training.checkpoint import load_network
        from facemask_tools.training.model import FlatHeads

        self.heads = FlatHeads(load_network(checkpoint)[0]).eval()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.no_grad():
            logits, boxes = self.heads(torch.from_numpy(batch))
        return logits.numpy(), boxes.numpy()

    def close(self) -> None:
        pass


def _assert_same(ours, theirs, box_rtol: float) -> None:
    """effdet keeps boxes clipped to zero width at the image border; the SDK drops them (no face)."""
    non_empty = (theirs.xyxy[:, 2] > theirs.xyxy[:, 0]) & (theirs.xyxy[:, 3] > theirs.xyxy[:, 1])
    theirs = theirs[non_empty]
    assert len(ours) == len(theirs) > 10
    np.testing.assert_array_equal(ours.class_ids, theirs.class_ids)
    np.testing.assert_allclose(ours.scores, theirs.scores, rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours.xyxy, theirs.xyxy, rtol=box_rtol, atol=1e-3)


def test_pipeline_equals_effdet_on_the_same_head_outputs(tiny_onnx, tiny_checkpoint, torch_runner, sample_images):
    """Detector's letterbox + NumPy post-processing == DetBenchPredict, within 1e-3 px and 1e-4 score
    (with effdet's class-aware NMS; the product default is one box per face)."""
    from facemask_sdk.image_io import read_image
    from facemask_sdk.stages import NumpyPostprocess, NumpyPreprocess, Pipeline

    with Detector(tiny_onnx, score_threshold=LOW_THRESHOLD, class_agnostic=False) as detector:
        spec, config = detector.spec, detector.config
    # the Detector's host stages around PyTorch's head outputs
    pipeline = Pipeline(NumpyPreprocess(spec), _TorchHeads(tiny_checkpoint), NumpyPostprocess(spec, config))
    for path in sample_images:
        (ours,), _ = pipeline.detect([read_image(path)])
        _assert_same(ours, torch_runner(path), box_rtol=0)


def test_onnxruntime_detector_equals_effdet(tiny_onnx, torch_runner, sample_images):
    """End to end on ONNX Runtime: head outputs differ from PyTorch by ~1e-5, which moves box edges by
    up to ~1e-3 px on the largest anchors; hence the small relative term on boxes."""
    with Detector(tiny_onnx, score_threshold=LOW_THRESHOLD, class_agnostic=False) as detector:
        for path in sample_images:
            _assert_same(detector(path), torch_runner(path), box_rtol=1e-5)


def test_detect_batch_equals_single_calls(tiny_onnx, sample_images):
    with Detector(tiny_onnx, score_threshold=LOW_THRESHOLD, max_detections=20) as detector:
        batch = detector.detect_batch(sample_images)
        timing = detector.last_timing
        assert timing["images"] == 4
        # the four files are read and decoded inside the call: that time is load_ms, not pre-processing
        assert timing["load_ms"] > 0
        stages = ("load_ms", "preprocess_ms", "inference_ms", "postprocess_ms")
        assert timing["total_ms"] == pytest.approx(sum(timing[key] for key in stages))
        singles = [detector(cv2.imread(str(p))) for p in sample_images]
        assert set(detector.last_timing) == {
            "load_ms",
            "preprocess_ms",
            "inference_ms",
            "postprocess_ms",
            "total_ms",
            "images",
            "closeup_checks",
        }
        assert all(v >= 0 for v in detector.last_timing.values())
        assert detector.detect_batch([]) == []
    for ours, single in zip(batch, singles):
        np.testing.assert_allclose(ours.xyxy, single.xyxy, atol=1e-3)
        np.testing.assert_allclose(ours.scores, single.scores, atol=1e-5)
        assert len(ours) == 20 and ours.class_names == ("with_mask", "without_mask", "mask_weared_incorrect")


def test_random_model_finds_nothing_at_the_default_threshold(tiny_onnx, sample_images):
    with Detector(tiny_onnx) as detector:
        detections = detector(sample_images[0])
    assert len(detections) == 0 and detections.summary()["compliance_rate"] is None


# -- images ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector(tiny_onnx):
    with Detector(tiny_onnx, score_threshold=LOW_THRESHOLD, max_detections=10) as detector:
        yield detector


@pytest.fixture(scope="module")
def image(sample_images) -> np.ndarray:
    return cv2.imread(str(sample_images[0]))


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda img, tmp: None, FacemaskError, "is None"),
        (lambda img, tmp: np.zeros((0, 0, 3), np.uint8), FacemaskError, "empty"),
        (lambda img, tmp: img.astype(np.float32), FacemaskError, "dtype float32; expected uint8"),
        (lambda img, tmp: img.astype(np.int32), FacemaskError, "dtype int32"),
        (lambda img, tmp: img[:, :, :2], FacemaskError, r"shape \(\d+, \d+, 2\); expected HxW"),
        (lambda img, tmp: img[None], FacemaskError, "expected HxW"),
        (lambda img, tmp: img.tolist(), FacemaskError, "must be a numpy array or a path, got list"),
        (lambda img, tmp: tmp / "missing.png", FileNotFoundError, "image not found"),
        (lambda img, tmp: str(tmp / "missing.png"), FileNotFoundError, "image not found"),
        (lambda img, tmp: _text_file(tmp / "notes.png"), FacemaskError, "cannot decode image"),
        (lambda img, tmp: tmp, FacemaskError, "not an image file"),
    ],
    ids=[
        "none",
        "empty",
        "float32",
        "int32",
        "two-channels",
        "4d",
        "list",
        "missing-path",
        "missing-str",
        "text-file",
        "folder",
    ],
)
def test_bad_images(detector, image, tmp_path, make, error, match) -> None:
    with pytest.raises(error, match=match):
        detector(make(image, tmp_path))
    assert issubclass(error, (ValueError, FileNotFoundError))


def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


@pytest.mark.parametrize(
    ("convert", "reference"),
    [
        (_gray, lambda img: cv2.cvtColor(_gray(img), cv2.COLOR_GRAY2BGR)),
        (lambda img: _gray(img)[:, :, None], lambda img: cv2.cvtColor(_gray(img), cv2.COLOR_GRAY2BGR)),
        (lambda img: cv2.cvtColor(img, cv2.COLOR_BGR2BGRA), lambda img: img),
        (lambda img: img.astype(np.uint16) * 257, lambda img: img),
    ],
    ids=["grayscale", "grayscale-hxwx1", "bgra", "uint16"],
)
def test_converted_images_match_their_bgr8_equivalent(detector, image, convert, reference) -> None:
    """Grayscale, BGRA and 16-bit images are converted, not refused."""
    ours, expected = detector(convert(image)), detector(reference(image))
    assert len(ours) == len(expected) > 0
    np.testing.assert_allclose(ours.xyxy, expected.xyxy, atol=1e-4)
    np.testing.assert_allclose(ours.scores, expected.scores, atol=1e-6)


# -- model files -------------------------------------------------------------------------------------


def _text_file(path: Path) -> Path:
    path.write_text("this is not a model or an image\n")
    return path


def _with_metadata(tiny_onnx: Path, out: Path, edit) -> Path:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(tiny_onnx))
    props = {p.key: p.value for p in model.metadata_props}
    props = edit(props)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(out))
    return out


def _other_version(props: dict) -> dict:
    spec = json.loads(props[METADATA_KEY])
    spec["format_version"] = 99
    return {**props, METADATA_KEY: json.dumps(spec)}


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda onnx_path, tmp: tmp / "missing.onnx", FileNotFoundError, "model file not found"),
        (lambda onnx_path, tmp: _text_file(tmp / "model.onnx"), ModelFileError, "not a loadable ONNX model"),
        (lambda onnx_path, tmp: _text_file(tmp / "model.pt"), ModelFileError, "cannot tell the backend"),
        (lambda onnx_path, tmp: tmp, ModelFileError, "cannot tell the backend"),
        (
            lambda onnx_path, tmp: _with_metadata(onnx_path, tmp / "bare.onnx", lambda p: {}),
            ModelFileError,
            f"without facemask-sdk metadata.*{METADATA_KEY}",
        ),
        (
            lambda onnx_path, tmp: _with_metadata(onnx_path, tmp / "v99.onnx", _other_version),
            ModelFileError,
            "format_version 99 is not supported",
        ),
    ],
    ids=["missing", "text-file", "unknown-suffix", "folder", "no-metadata", "other-version"],
)
def test_bad_model_files(tiny_onnx, tmp_path, make, error, match) -> None:
    with pytest.raises(error, match=match):
        Detector(make(tiny_onnx, tmp_path))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"score_threshold": 1.5}, "score_threshold must be a number in"),
        ({"iou_threshold": -0.1}, "iou_threshold must be a number in"),
        ({"max_detections": 0}, "max_detections must be a whole number >= 1"),
        ({"backend": "tflite"}, "unknown backend .tflite."),
        ({"providers": ["NoSuchExecutionProvider"]}, "providers .* are not available"),
        ({"threads": 0}, "threads must be a whole number >= 1"),
    ],
)
def test_bad_arguments(tiny_onnx, kwargs, match) -> None:
    with pytest.raises(FacemaskError, match=match):
        Detector(tiny_onnx, **kwargs)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda Detector: Detector(123), "model must be a path"),
        (lambda Detector: Detector().frame_buffer(1.5, 2), "whole number of pixels"),
        (lambda Detector: Detector(None, score_threshold=float("nan")), "score_threshold"),
    ],
    ids=["model-int", "frame-buffer-float", "nan-threshold"],
)
def test_sdk_bad_arguments_raise_facemask_error(call, fragment):
    pytest.importorskip("onnxruntime")
    from facemask_sdk import Detector, FacemaskError

    with pytest.raises(FacemaskError, match=fragment):
        call(Detector)


def test_engine_on_a_machine_without_tensorrt_is_a_clear_error(tmp_path) -> None:
    """The `.engine` suffix picks the TensorRT backend, which refuses with a message (no sidecar, or no TensorRT)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 16)
    with pytest.raises(FacemaskError, match="sidecar|TensorRT"):
        Detector(engine)


def test_default_model(monkeypatch, tiny_onnx, tmp_path) -> None:
    from facemask_sdk import models

    monkeypatch.setenv(models.MODEL_ENV_VAR, str(tiny_onnx))
    with Detector() as detector:
        assert detector.model_path == tiny_onnx
    monkeypatch.setenv(models.MODEL_ENV_VAR, str(tmp_path / "nope.onnx"))
    with pytest.raises(FileNotFoundError, match="FACEMASK_SDK_MODEL points to"):
        Detector()
    monkeypatch.delenv(models.MODEL_ENV_VAR)
    monkeypatch.setattr(models, "shipped_model_dir", lambda: tmp_path / "models")
    with pytest.raises(FileNotFoundError, match="facemask-sdk export"):
        Detector()


# -- lifecycle and threads ---------------------------------------------------------------------------


def test_lifecycle(tiny_onnx, image) -> None:
    detector = Detector(tiny_onnx)
    with detector as same:
        assert same is detector and not detector.closed
        detector(image)
    assert detector.closed
    detector.close()  # twice is fine
    with pytest.raises(FacemaskError, match="closed"):
        detector(image)
    with pytest.raises(FacemaskError, match="closed"):
        with detector:
            pass
    assert "closed" in repr(detector)


def test_last_timing_is_per_thread(tiny_onnx, sample_images):
    """One Detector shared by threads: each thread's last_timing is its own call's (1 image vs 3)."""
    import threading

    seen: dict[str, dict] = {}
    with Detector(tiny_onnx, score_threshold=LOW_THRESHOLD) as detector:
        detector(sample_images[0])
        assert detector.last_timing["images"] == 1

        def work(name: str, count: int) -> None:
            for _ in range(3):
                detector.detect_batch(sample_images[:count])
            seen[name] = detector.last_timing

        threads = [threading.Thread(target=work, args=(f"t{n}", n)) for n in (1, 3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert seen["t1"]["images"] == 1 and seen["t3"]["images"] == 3
        assert detector.last_timing["images"] == 1  # the main thread's own last call


def test_input_size_is_a_deployment_choice_for_a_dynamic_size_model(tiny_any_size_export, tiny_onnx, sample_images):
    from facemask_sdk.anchors import generate_anchors

    with Detector(tiny_any_size_export.path, input_size=384, score_threshold=0.0) as detector:
        assert detector.spec.image_size == (384, 384)
        detections = detector(sample_images[0])
        assert len(detections) > 0
        assert len(generate_anchors(detector.spec)) > len(generate_anchors(detector.spec.at_input_size(256)))
    with Detector(tiny_any_size_export.path) as native:
        assert native.spec.image_size == (256, 256)
    with Detector(tiny_onnx, input_size=256) as same:  # a fixed-size model at its own size is fine
        assert same.spec.image_size == (256, 256)
    with pytest.raises(FacemaskError, match="--dynamic-size"):
        Detector(tiny_onnx, input_size=384)
    with pytest.raises(FacemaskError, match="multiple of 128"):
        Detector(tiny_any_size_export.path, input_size=300)
