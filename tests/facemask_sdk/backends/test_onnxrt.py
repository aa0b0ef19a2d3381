"""`OnnxRuntimeRunner` (facemask_sdk.backends.onnxrt): batch and input checks, lifecycle, and a float16 model's
input cast."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_graphs import constant_heads_model

from facemask_sdk import Detector
from facemask_sdk.errors import FacemaskError

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


def test_fp16_model_input_is_cast(tiny_onnx, tmp_path) -> None:
    """A model whose input is float16 (an FP16 variant) gets float16 in and gives float32 out."""
    from facemask_sdk.backends.onnxrt import OnnxRuntimeRunner

    path, anchors = constant_heads_model(tiny_onnx, tmp_path / "fp16.onnx", "float16")

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

    _, anchors = constant_heads_model(tiny_onnx, tmp_path / "probe.onnx")
    rows, width = sizes
    path, _ = constant_heads_model(tiny_onnx, tmp_path / "wrong.onnx", sizes=(rows or anchors, width))
    with pytest.raises(
        ModelFileError, match=rf"output '(logits|boxes)' has shape .*the model spec says \[N, {anchors}, [34]\]"
    ):
        OnnxRuntimeRunner(path)


def test_a_dynamic_size_graph_with_other_heads_is_refused_at_load(tiny_onnx, tmp_path) -> None:
    """Pinned to its size, a dynamic-size graph declares its heads' shapes; one whose input dimensions have no names
    to pin them by declares no anchor count, and the one 128 px run at load shows the heads are not the spec's."""
    from facemask_sdk.backends.onnxrt import OnnxRuntimeRunner
    from facemask_sdk.errors import ModelFileError

    path, anchors = constant_heads_model(
        tiny_onnx, tmp_path / "wrong.onnx", dynamic=True
    )  # as many rows as pixels high
    with pytest.raises(
        ModelFileError, match=rf"output 'logits' has shape \[1, 256, 3\]; the model spec says \[N, {anchors}"
    ):
        OnnxRuntimeRunner(path)
    path, _ = constant_heads_model(tiny_onnx, tmp_path / "unnamed.onnx", dynamic=True, size_names=(None, None))
    with pytest.raises(ModelFileError, match=r"output 'logits' has shape \[1, 128, 3\] at 128 px; the model spec says"):
        OnnxRuntimeRunner(path)


def test_the_shipped_dynamic_size_model_runs_pinned_to_the_chosen_size_with_the_same_outputs() -> None:
    """Pinning the free height and width (what makes ONNX Runtime plan the shapes at load) changes no number."""
    import onnxruntime as ort

    from facemask_sdk.backends.onnxrt import OnnxRuntimeRunner, _heads_declare_anchor_count
    from facemask_sdk.models import shipped_model_path

    if not shipped_model_path().is_file():
        pytest.skip(f"the shipped model is not in this checkout ({shipped_model_path()})")
    batch = np.random.default_rng(0).uniform(-1, 1, (1, 3, 640, 640)).astype(np.float32)
    with OnnxRuntimeRunner(shipped_model_path(), input_size=640, threads=1) as runner:
        assert runner.size_pinned and runner._session.get_inputs()[0].shape == [1, 3, 640, 640]
        assert _heads_declare_anchor_count(runner._session), "pinned, its heads' shapes are known: no test run at load"
        logits, boxes = runner.run(batch)
    free = ort.InferenceSession(str(shipped_model_path()), providers=["CPUExecutionProvider"])
    assert free.get_inputs()[0].shape == [1, 3, "height", "width"]
    free_logits, free_boxes = free.run(None, {"images": batch})
    np.testing.assert_allclose(logits, free_logits, atol=1e-4)
    np.testing.assert_allclose(boxes, free_boxes, atol=1e-4)
