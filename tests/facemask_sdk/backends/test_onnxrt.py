"""`OnnxRuntimeRunner` (facemask_sdk.backends.onnxrt): batch and input checks, lifecycle, and a float16 model's
input cast."""

from __future__ import annotations

import numpy as np
import pytest

from facemask_sdk import Detector
from facemask_sdk.errors import FacemaskError
from facemask_sdk.spec import METADATA_KEY

pytest.importorskip("onnxruntime")


def test_runner_checks_batches(tiny_onnx) -> None:
    from facemask_sdk.backends.onnxrt import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(tiny_onnx, threads=1)
    assert runner.providers[-1] == "CPUExecutionProvider" and runner.batch_size == 1
    for bad, match in [
        (np.zeros((1, 3, 128, 128), np.float32), r"shape \[N, 3, 256, 256\]"),
        (np.zeros((3, 256, 256), np.float32), r"shape \[N, 3, 256, 256\]"),
        (np.zeros((1, 3, 256, 256), np.uint8), "float array"),
        ([[0.0]], "numpy array"),
    ]:
        with pytest.raises(FacemaskError, match=match):
            runner.run(bad)
    runner.close()
    with pytest.raises(FacemaskError, match="closed"):
        runner.run(np.zeros((1, 3, 256, 256), np.float32))


def _constant_heads_model(tiny_onnx, path, dtype: str = "float", sizes: tuple[int, int] | None = None):
    """An ONNX with the tiny model's input and metadata whose heads are the input's mean, expanded to
    [1, anchors, 3] and [1, anchors, 4] (or to `sizes` = (anchors, box width) for a wrong graph)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from facemask_sdk.anchors import generate_anchors
    from facemask_sdk.spec import ModelSpec

    INT64 = TensorProto.INT64
    element = {"float": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}[dtype]
    source = onnx.load(str(tiny_onnx))
    spec_json = {p.key: p.value for p in source.metadata_props}[METADATA_KEY]
    anchors = len(generate_anchors(ModelSpec.from_json(spec_json)))
    rows, width = sizes or (anchors, 4)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),  # mean over everything -> scalar
        helper.make_node("Constant", [], ["logits_shape"], value=helper.make_tensor("s1", INT64, [3], [1, rows, 3])),
        helper.make_node("Constant", [], ["boxes_shape"], value=helper.make_tensor("s2", INT64, [3], [1, rows, width])),
        helper.make_node("Expand", ["mean", "logits_shape"], ["logits"]),
        helper.make_node("Expand", ["mean", "boxes_shape"], ["boxes"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant-heads",
        [helper.make_tensor_value_info("images", element, [1, 3, 256, 256])],
        [
            helper.make_tensor_value_info("logits", element, [1, rows, 3]),
            helper.make_tensor_value_info("boxes", element, [1, rows, width]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key=METADATA_KEY, value=spec_json)
    onnx.save(model, str(path))
    return path, anchors


def test_fp16_model_input_is_cast(tiny_onnx, tmp_path) -> None:
    """A model whose input is float16 (an FP16 variant) gets float16 in and gives float32 out."""
    from facemask_sdk.backends.onnxrt import OnnxRuntimeRunner

    path, anchors = _constant_heads_model(tiny_onnx, tmp_path / "fp16.onnx", "float16")

    with OnnxRuntimeRunner(path) as runner:
        assert runner.input_dtype == np.float16
        batch = np.full((2, 3, 256, 256), 0.25, np.float32)  # static batch 1: runs as two chunks
        logits, boxes = runner.run(batch)
    assert logits.dtype == boxes.dtype == np.float32
    assert logits.shape == (2, anchors, 3) and boxes.shape == (2, anchors, 4)
    np.testing.assert_allclose(logits, 0.25)
    with Detector(path, score_threshold=0.0, max_detections=5) as detector:
        assert len(detector(np.zeros((50, 60, 3), np.uint8))) == 5


@pytest.mark.parametrize("sizes", [(10, 4), (None, 5)], ids=["anchor-count", "box-width"])
def test_heads_of_the_wrong_shape_are_refused_at_load(tiny_onnx, tmp_path, sizes) -> None:
    """The right input and output names but other heads: refused when loaded, not ready to answer garbage."""
    from facemask_sdk.backends.onnxrt import OnnxRuntimeRunner
    from facemask_sdk.errors import ModelFileError

    _, anchors = _constant_heads_model(tiny_onnx, tmp_path / "probe.onnx")
    rows, width = sizes
    path, _ = _constant_heads_model(tiny_onnx, tmp_path / "wrong.onnx", sizes=(rows or anchors, width))
    with pytest.raises(
        ModelFileError, match=rf"output '(logits|boxes)' has shape .*the model spec says \[N, {anchors}, [34]\]"
    ):
        OnnxRuntimeRunner(path)
