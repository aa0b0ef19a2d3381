"""The TensorRT backend (facemask_sdk.backends.tensorrt): everything that can be checked without TensorRT or a
GPU, `TensorRTRunner` end to end on stand-ins for tensorrt and pycuda (`fake_cuda`, whose kernels run on the CPU
emulator: tests/facemask_sdk/conftest.py), plus engine tests that skip here ('TensorRT is not installed')."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemask_sdk.anchors import generate_anchors
from facemask_sdk.backends.tensorrt import TensorRTRunner, io_roles
from facemask_sdk.engine_meta import sidecar_path, write_sidecar
from facemask_sdk.errors import FacemaskError, ModelFileError
from facemask_sdk.preprocess import preprocess
from facemask_sdk.spec import ModelSpec

SPEC = ModelSpec("tf_efficientdet_d0", (512, 512))
REPO = Path(__file__).resolve().parents[3]
SAMPLE_IMAGES = sorted((REPO / "samples" / "images").glob("*.png"))
SPEC_256 = ModelSpec("tf_efficientdet_d0", (256, 256))


def _have_tensorrt() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


@pytest.fixture
def engine(tmp_path: Path) -> Path:
    """A fake engine file with a valid sidecar (built 'for Orin, TensorRT 10.3.0')."""
    path = tmp_path / "model.fp16.engine"
    path.write_bytes(b"not really an engine")
    write_sidecar(
        path,
        {
            "spec": SPEC.to_dict(),
            "precision": "fp16",
            "tensorrt_version": "10.3.0",
            "gpu_name": "Orin",
            "compute_capability": "8.7",
            "onnx_sha256": "0" * 64,
            "onnx_path": "models/facemask.fp16.onnx",
        },
    )
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


def test_importing_the_backend_loads_neither_tensorrt_nor_pycuda(fresh_python) -> None:
    code = (
        "import sys, facemask_sdk.backends.tensorrt, facemask_sdk.cuda, facemask_sdk.engine_meta\n"
        "heavy = [m for m in ('tensorrt', 'pycuda', 'torch', 'effdet') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = fresh_python(code)
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
        (
            "other_gpu",
            ModelFileError,
            [
                "built for",
                "compute capability 8.7 (here: 9.0)",
                "GPU 'Orin' (here: 'NVIDIA H100 80GB HBM3')",
                "facemask-sdk build-engine --onnx models/facemask.fp16.onnx --fp16 --out",
            ],
        ),
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
    "inputs, outputs",
    [(["images"], ["logits", "boxes"]), (["images"], ["boxes", "logits"])],
)
def test_io_roles_come_from_the_names_export_writes(inputs, outputs) -> None:
    assert io_roles(inputs, outputs, Path("m.engine")) == {
        "input": "images",
        "logits": "logits",
        "box_codes": "boxes",
    }


@pytest.mark.parametrize(
    "inputs, outputs",
    [
        (["input"], ["logits", "boxes"]),
        (["images"], ["class_out", "box_out"]),
        (["images"], ["logits"]),
        (["images", "extra"], ["logits", "boxes"]),
    ],
)
def test_io_roles_refuse_other_names(inputs, outputs) -> None:
    with pytest.raises(ModelFileError, match="the names facemask-sdk export writes") as info:
        io_roles(inputs, outputs, Path("m.engine"))
    assert "rebuild the engine from the exported ONNX" in str(info.value)


# --- the TensorRT runner with a stand-in tensorrt module ----------------------------------------------
@pytest.mark.parametrize("io_dtype, dynamic", [(np.float32, False), (np.float16, True)])
def test_runner_is_the_network_stage_on_the_device(
    fake_tensorrt, fake_cuda, fake_engine, io_dtype, dynamic, error_of, head_outputs
) -> None:
    """bind() points the engine at a CudaKernels's buffers, enqueue() runs it there, run() is the host
    parity path; two runners of one file share the engine; close() frees the context and the engine."""
    import threading

    from facemask_sdk.backends.tensorrt import _ENGINES
    from facemask_sdk.cuda import CudaKernels
    from facemask_sdk.errors import InternalError

    rng = np.random.default_rng(2)
    logits, box_codes = head_outputs(rng, len(generate_anchors(SPEC_256)), SPEC_256.num_classes, 300)
    trt = fake_tensorrt(logits, box_codes, io_dtype=io_dtype, dynamic_batch=dynamic)
    image = cv2.imread(str(SAMPLE_IMAGES[1]), cv2.IMREAD_COLOR)
    reference, _ = preprocess(image, SPEC_256)

    with TensorRTRunner(fake_engine) as runner:
        second = TensorRTRunner(fake_engine)
        assert trt.deserialized == 1 and len(_ENGINES) == 1  # two execution contexts, one engine
        second.close()
        assert len(_ENGINES) == 1  # still used by `runner`
        assert runner.device_dtypes == (np.dtype(io_dtype), np.dtype(io_dtype)) and runner.batch_size == 1
        with pytest.raises(InternalError, match="bind"):
            runner.enqueue()
        with CudaKernels(runner.spec, input_dtype=runner.input_dtype, head_dtype=runner.head_dtype) as kernels:
            runner.bind(kernels)
            kernels.preprocess(image)
            runner.enqueue()
            kernels.synchronize()
            np.testing.assert_array_equal(trt.seen_inputs[-1], reference.astype(io_dtype))
            np.testing.assert_array_equal(kernels.download_head()[0], logits.astype(io_dtype).astype(np.float32))
            out_logits, out_boxes = runner.run(reference[None])
            assert out_logits.shape == (1, *logits.shape) and out_logits.dtype == np.float32
            np.testing.assert_array_equal(out_boxes[0], box_codes.astype(io_dtype).astype(np.float32))

            errors = []
            thread = threading.Thread(target=lambda: errors.append(error_of(runner.enqueue)))
            thread.start()
            thread.join()
            assert "one Detector per thread" in errors[0]
            runner.close()
        with pytest.raises(FacemaskError, match="closed"):
            runner.enqueue()
    assert not _ENGINES and not fake_cuda.live and not fake_cuda.stack


def test_runner_refuses_device_buffers_of_another_dtype(fake_tensorrt, fake_engine, head_outputs) -> None:
    from facemask_sdk.cuda import CudaKernels
    from facemask_sdk.errors import InternalError

    anchors = len(generate_anchors(SPEC_256))
    fake_tensorrt(*head_outputs(np.random.default_rng(0), anchors, 3, 10), io_dtype=np.float16)
    with TensorRTRunner(fake_engine) as runner, CudaKernels(runner.spec) as kernels:
        with pytest.raises(InternalError, match="float16"):
            runner.bind(kernels)


def test_tensorrt_runner_refuses_an_engine_from_another_gpu(fake_tensorrt, fake_cuda, fake_engine, monkeypatch) -> None:
    from facemask_sdk.backends.tensorrt import _ENGINES

    anchors = generate_anchors(SPEC_256)
    trt = fake_tensorrt(np.zeros((len(anchors), 3), np.float32), np.zeros((len(anchors), 4), np.float32))
    monkeypatch.setattr(fake_cuda.Device, "name", lambda self: "NVIDIA H100 80GB HBM3")
    with pytest.raises(ModelFileError, match="GPU 'Orin'"):
        TensorRTRunner(fake_engine)
    assert trt.deserialized == 0 and not _ENGINES and not fake_cuda.live

    fake_engine.write_bytes(b"corrupt")
    monkeypatch.setattr(fake_cuda.Device, "name", lambda self: "Orin")
    with pytest.raises(ModelFileError, match="could not load"):
        TensorRTRunner(fake_engine)
    assert not _ENGINES and not fake_cuda.live and not fake_cuda.stack


# --- with TensorRT and a GPU -------------------------------------------------------------------------


needs_tensorrt = pytest.mark.skipif(not _have_tensorrt(), reason="TensorRT is not installed")


@pytest.mark.trt
@pytest.mark.gpu
@needs_tensorrt
def test_garbage_engine_is_refused_with_rebuild_advice(tmp_path: Path) -> None:
    import tensorrt as trt

    from facemask_sdk.cuda.kernels import import_pycuda

    cuda = import_pycuda()
    gpu = cuda.Device(0)
    major, minor = gpu.compute_capability()
    path = tmp_path / "garbage.engine"
    path.write_bytes(b"\0" * 4096)
    write_sidecar(
        path,
        {
            "spec": SPEC.to_dict(),
            "precision": "fp32",
            "tensorrt_version": trt.__version__,
            "gpu_name": gpu.name(),
            "compute_capability": f"{major}.{minor}",
            "onnx_sha256": "0" * 64,
        },
    )
    with pytest.raises(ModelFileError, match="rebuild"):
        TensorRTRunner(path)


def test_an_engine_of_a_dynamic_size_export_is_bound_at_its_sidecar_size(
    fake_tensorrt, fake_cuda, fake_engine, head_outputs
) -> None:
    from tests.facemask_sdk.conftest import SPEC_256

    rng = np.random.default_rng(5)
    logits, box_codes = head_outputs(rng, len(generate_anchors(SPEC_256)), SPEC_256.num_classes, 50)
    fake_tensorrt(logits, box_codes, dynamic_size=True)  # input (1, 3, -1, -1) until bound
    image = cv2.imread(str(SAMPLE_IMAGES[0]), cv2.IMREAD_COLOR)
    from facemask_sdk.cuda import CudaKernels

    with TensorRTRunner(fake_engine) as runner:
        assert runner.spec.image_size == (256, 256)
        with CudaKernels(runner.spec, input_dtype=runner.input_dtype, head_dtype=runner.head_dtype) as kernels:
            runner.bind(kernels)
            out_logits, _ = runner.run(preprocess(image, SPEC_256)[0][None])
        np.testing.assert_array_equal(out_logits[0], logits)
