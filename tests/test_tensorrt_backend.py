"""TensorRT backend: everything that can be checked without TensorRT or a GPU, plus engine tests that
skip here ('TensorRT is not installed')."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from facemask_sdk.backends.tensorrt import TensorRTRunner, _output_roles
from facemask_sdk.engine_meta import sidecar_path, write_sidecar
from facemask_sdk.errors import FacemaskError, ModelFileError
from facemask_sdk.spec import ModelSpec

SPEC = ModelSpec("tf_efficientdet_d0", (512, 512))


def _have_tensorrt() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


@pytest.fixture
def engine(tmp_path: Path) -> Path:
    """A fake engine file with a valid sidecar (built 'for Orin, TensorRT 10.3.0')."""
    path = tmp_path / "model.fp16.engine"
    path.write_bytes(b"not really an engine")
    write_sidecar(path, {
        "spec": SPEC.to_dict(), "precision": "fp16", "tensorrt_version": "10.3.0", "gpu_name": "Orin",
        "compute_capability": "8.7", "onnx_sha256": "0" * 64, "onnx_path": "models/facemask.fp16.onnx",
    })
    return path


def fake_module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def fake_pycuda(monkeypatch, gpu_name: str = "NVIDIA H100 80GB HBM3", capability=(9, 0)) -> None:
    class Device:
        def __init__(self, ordinal: int) -> None:
            self.ordinal = ordinal

        def name(self) -> str:
            return gpu_name

        def compute_capability(self) -> tuple[int, int]:
            return capability

    driver = fake_module("pycuda.driver", init=lambda: None, Device=Device)
    monkeypatch.setitem(sys.modules, "pycuda", fake_module("pycuda", driver=driver))
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)


def test_importing_the_backend_loads_neither_tensorrt_nor_pycuda() -> None:
    code = (
        "import sys, facemask_sdk.backends.tensorrt, facemask_sdk.cuda, facemask_sdk.engine_meta\n"
        "heavy = [m for m in ('tensorrt', 'pycuda', 'torch', 'effdet') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "case, error, words",
    [
        ("missing_engine", FileNotFoundError, ["engine file not found", "nope.engine"]),
        ("directory", ModelFileError, ["not a file"]),
        ("missing_sidecar", ModelFileError, ["model.fp16.engine.json not found", "build-engine"]),
        ("no_tensorrt", FacemaskError, ["TensorRT is not installed", ".onnx"]),
        ("old_tensorrt", FacemaskError, ["TensorRT 8.6.1 is installed here", "needs TensorRT 10 or 11", "JetPack 6.1"]),
        ("no_pycuda", FacemaskError, ["pycuda", "facemask-sdk[trt]"]),
        ("other_gpu", ModelFileError, ["built for", "compute capability 8.7 (here: 9.0)",
                                       "GPU 'Orin' (here: 'NVIDIA H100 80GB HBM3')",
                                       "facemask-sdk build-engine --onnx models/facemask.fp16.onnx --fp16 --out"]),
        ("other_tensorrt", ModelFileError, ["TensorRT 10.3.0 (here: 10.7.0)", "rebuild it on this device"]),
    ],
)
def test_runner_refuses_before_touching_the_gpu(engine: Path, monkeypatch, case: str, error, words) -> None:
    path = engine
    if case == "missing_engine":
        path = engine.with_name("nope.engine")
    elif case == "directory":
        path = engine.parent
    elif case == "missing_sidecar":
        sidecar_path(engine).unlink()
    if case == "no_tensorrt":
        monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    else:
        version = {"old_tensorrt": "8.6.1", "other_tensorrt": "10.7.0"}.get(case, "10.3.0")
        monkeypatch.setitem(sys.modules, "tensorrt", fake_module("tensorrt", __version__=version))
    if case == "no_pycuda":
        monkeypatch.setitem(sys.modules, "pycuda", None)
        monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    elif case == "other_tensorrt":
        fake_pycuda(monkeypatch, "Orin", (8, 7))
    else:
        fake_pycuda(monkeypatch)

    with pytest.raises(error) as info:
        TensorRTRunner(path)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_detector_reports_missing_tensorrt(engine: Path, monkeypatch) -> None:
    from facemask_sdk.detector import Detector

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(FacemaskError, match="TensorRT is not installed"):
        Detector(engine)


@pytest.mark.parametrize(
    "names, shapes, classes, expected",
    [
        (["logits", "boxes"], [(1, 10, 3), (1, 10, 4)], 3, {"logits": "logits", "regressions": "boxes"}),
        (["boxes", "logits"], [(1, 10, 4), (1, 10, 3)], 3, {"logits": "logits", "regressions": "boxes"}),
        (["class_out", "box_out"], [(1, 10, 4), (1, 10, 4)], 4, {"logits": "class_out", "regressions": "box_out"}),
        (["out0", "out1"], [(1, 10, 4), (1, 10, 3)], 3, {"logits": "out1", "regressions": "out0"}),
        (["out0", "out1"], [(1, 10, 4), (1, 10, 4)], 4, ModelFileError),
        (["out0", "out1"], [(1, 10, 5), (1, 10, 4)], 3, ModelFileError),
    ],
)
def test_output_roles(names, shapes, classes, expected) -> None:
    if isinstance(expected, dict):
        assert _output_roles(names, shapes, classes) == expected
    else:
        with pytest.raises(expected, match="cannot tell the logits"):
            _output_roles(names, shapes, classes)


# --- with TensorRT and a GPU -------------------------------------------------------------------------

needs_tensorrt = pytest.mark.skipif(not _have_tensorrt(), reason="TensorRT is not installed")


@pytest.mark.trt
@pytest.mark.gpu
@needs_tensorrt
def test_garbage_engine_is_refused_with_rebuild_advice(tmp_path: Path) -> None:
    import tensorrt as trt

    from facemask_sdk.cuda.pipeline import import_pycuda

    cuda = import_pycuda()
    gpu = cuda.Device(0)
    major, minor = gpu.compute_capability()
    path = tmp_path / "garbage.engine"
    path.write_bytes(b"\0" * 4096)
    write_sidecar(path, {"spec": SPEC.to_dict(), "precision": "fp32", "tensorrt_version": trt.__version__,
                         "gpu_name": gpu.name(), "compute_capability": f"{major}.{minor}", "onnx_sha256": "0" * 64})
    with pytest.raises(ModelFileError, match="rebuild"):
        TensorRTRunner(path)


@pytest.mark.trt
@pytest.mark.gpu
@needs_tensorrt
def test_engine_matches_numpy_pipeline(request) -> None:
    """An engine built by `facemask-sdk build-engine` (FACEMASK_TEST_ENGINE) gives the detections of the
    NumPy pipeline run on the engine's own head outputs."""
    import os

    engine = os.environ.get("FACEMASK_TEST_ENGINE")
    if not engine:
        pytest.skip("set FACEMASK_TEST_ENGINE to an engine built on this device")
    from facemask_sdk.anchors import generate_anchors
    from facemask_sdk.image_io import read_image
    from facemask_sdk.postprocess import postprocess
    from facemask_sdk.preprocess import preprocess

    samples = sorted((Path(__file__).resolve().parents[1] / "samples" / "images").glob("*.png"))
    with TensorRTRunner(engine) as runner:
        for path in samples:
            image = read_image(path)
            detections = runner.infer(image)
            tensor, box = preprocess(image, runner.spec)
            logits, boxes = runner.run(tensor[None])
            anchors = generate_anchors(runner.spec)
            xyxy, scores, class_ids = postprocess(logits[0], boxes[0], anchors, box, runner.config)
            assert len(detections) == len(xyxy)
            np.testing.assert_allclose(detections.xyxy, xyxy, atol=0.5)  # GPU vs CPU letterbox: <= 1 LSB inputs
            np.testing.assert_array_equal(detections.class_ids, class_ids)
            assert set(runner.last_timing) >= {"preprocess_ms", "inference_ms", "postprocess_ms"}
