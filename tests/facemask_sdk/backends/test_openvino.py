"""The OpenVINO runner against ONNX Runtime on the same tiny model and pre-processed samples."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino", reason="the OpenVINO backend needs openvino (pip install 'facemask-sdk[openvino]')")
pytest.importorskip("onnxruntime", reason="compared with ONNX Runtime (pip install 'facemask-sdk[onnx]')")

from facemask_sdk import Detector  # noqa: E402
from facemask_sdk.backends.onnxrt import OnnxRuntimeRunner  # noqa: E402
from facemask_sdk.backends.openvino import OpenVinoRunner  # noqa: E402
from facemask_sdk.errors import FacemaskError  # noqa: E402
from facemask_sdk.image_io import read_image  # noqa: E402
from facemask_sdk.preprocess import preprocess  # noqa: E402


def _batch(paths, spec) -> np.ndarray:
    return np.stack([preprocess(read_image(p), spec)[0] for p in paths])


@pytest.mark.parametrize("size", [None, 384])
def test_fp32_matches_onnxruntime(tiny_any_size_export, sample_images, size):
    with (
        OpenVinoRunner(tiny_any_size_export.path, input_size=size, precision="fp32") as ov,
        OnnxRuntimeRunner(tiny_any_size_export.path, input_size=size) as ort,
    ):
        assert ov.spec == ort.spec and ov.spec.image_size[0] == (size or 256)
        batch = _batch(sample_images[:2], ov.spec)
        for got, expected in zip(ov.run(batch), ort.run(batch)):
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, atol=2e-3)


def test_bf16_stays_close_where_the_cpu_has_it(tiny_onnx, sample_images):
    with OpenVinoRunner(tiny_onnx, precision="bf16") as ov, OnnxRuntimeRunner(tiny_onnx) as ort:
        batch = _batch(sample_images[:1], ov.spec)
        logits, _ = ov.run(batch)
        reference, _ = ort.run(batch)
        assert np.abs(logits - reference).max() < 0.25  # bf16 keeps 8 bits of mantissa
        assert np.corrcoef(logits.ravel(), reference.ravel())[0, 1] > 0.99


def test_detector_on_openvino_and_its_refusals(tiny_onnx, tiny_any_size_export, sample_images):
    with Detector(tiny_onnx, backend="openvino", score_threshold=0.0) as detector:
        assert detector.backend == "openvino" and detector.providers[0].startswith("OpenVINO CPU")
        assert len(detector(sample_images[0])) > 0
    with pytest.raises(FacemaskError, match="--dynamic-size"):
        Detector(tiny_onnx, backend="openvino", input_size=384)
    with pytest.raises(FacemaskError, match="precision"):
        OpenVinoRunner(tiny_onnx, precision="int4")
    with pytest.raises(FacemaskError, match="providers are ONNX Runtime's"):
        Detector(tiny_onnx, backend="ov", providers=["CPUExecutionProvider"])
    runner = OpenVinoRunner(tiny_any_size_export.path)
    runner.close()
    with pytest.raises(FacemaskError, match="closed"):
        runner.run(np.zeros((1, 3, 256, 256), np.float32))


def test_a_model_without_our_metadata_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 128, 128])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 128, 128])],
    )
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    from facemask_sdk.errors import ModelFileError

    with pytest.raises(ModelFileError, match="without facemask-sdk metadata"):
        OpenVinoRunner(path)
