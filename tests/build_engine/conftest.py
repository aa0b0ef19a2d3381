"""Fixtures shared by the build-engine tests: the tiny model's preprocessed samples and its FP32 outputs on them,
a copy of it to convert, and two ONNX helpers (`run`, `float_types`). The modules that use them skip without
onnx and onnxruntime."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from facemask_sdk.image_io import read_image
from facemask_sdk.preprocess import preprocess
from facemask_sdk.spec import METADATA_KEY, ModelSpec

try:
    import onnx
    import onnxruntime as ort
except ImportError:  # the test modules skip first
    onnx = ort = None


def float_types(model: onnx.ModelProto) -> dict[str, int]:
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.output, *graph.value_info)}
    types.update({i.name: i.data_type for i in graph.initializer})
    return types


def run(model_path: Path, inputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    outputs = [session.run(["logits", "boxes"], {"images": x}) for x in inputs]
    return np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs])


@pytest.fixture(name="float_types")
def float_types_fixture():
    """`float_types(model)`: element type of every tensor of an ONNX model, by name (after shape inference)."""
    return float_types


@pytest.fixture(name="run")
def run_fixture():
    """`run(model_path, inputs)`: (logits, boxes) of an ONNX model on ONNX Runtime's CPU, one input at a time."""
    return run


@pytest.fixture(scope="module")
def inputs(tiny_onnx: Path, sample_images: list[Path]) -> list[np.ndarray]:
    model = onnx.load(str(tiny_onnx))
    spec = ModelSpec.from_json({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    return [preprocess(read_image(p), spec)[0][None] for p in sample_images]


@pytest.fixture(scope="module")
def fp32_outputs(tiny_onnx: Path, inputs) -> tuple[np.ndarray, np.ndarray]:
    return run(tiny_onnx, inputs)


@pytest.fixture()
def model_copy(tiny_onnx: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(tiny_onnx, tmp_path / "model.onnx"))
