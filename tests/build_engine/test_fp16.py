"""The FP16 ONNX variant (facemask_tools.build_engine.fp16) of the tiny model: FP16 inside with FP32 I/O, metadata
kept, nodes kept in FP32 by name or type, outputs close to FP32 (also through the FP16 emulation), no overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from onnx import TensorProto  # noqa: E402

from facemask_sdk.errors import FacemaskError  # noqa: E402
from facemask_tools.build_engine.fp16 import emulate_fp16, to_fp16  # noqa: E402
from facemask_tools.build_engine.precision import PRECISION_KEY  # noqa: E402

# Tolerances on the randomly initialised tiny model (logits spread ~0.45, box codes ~0.75):
FP16_MAX_ABS = 0.05  # observed ~0.015 (file on ORT CPU) and ~0.026 (emulated FP16 storage)


@pytest.fixture(scope="module")
def fp16_onnx(tiny_onnx: Path, tmp_path_factory) -> Path:
    return to_fp16(tiny_onnx, tmp_path_factory.mktemp("fp16") / "tiny.fp16.onnx").path


def test_fp16_graph_is_fp16_inside_with_fp32_io(fp16_onnx: Path, float_types):
    model = onnx.load(str(fp16_onnx))
    onnx.checker.check_model(model, full_check=True)
    float_inits = [i for i in model.graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert float_inits and all(i.data_type == TensorProto.FLOAT16 for i in float_inits)
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT, value.name
    types = float_types(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(types[name] == TensorProto.FLOAT16 for n in convs for name in (*n.input, *n.output) if name)
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert len(casts) == 3  # images -> fp16, and logits / boxes back to fp32


def test_fp16_preserves_metadata(tiny_onnx: Path, fp16_onnx: Path):
    before = {p.key: p.value for p in onnx.load(str(tiny_onnx)).metadata_props}
    after = {p.key: p.value for p in onnx.load(str(fp16_onnx)).metadata_props}
    assert {k: after[k] for k in before} == before
    assert after[PRECISION_KEY] == "fp16"
    assert json.loads(after["fp16.kept_fp32"]) == []


def test_fp16_keep_fp32_by_name_and_type(tiny_onnx: Path, tmp_path: Path, float_types):
    model = onnx.load(str(tiny_onnx))
    first_conv = next(n.name for n in model.graph.node if n.op_type == "Conv")
    out = to_fp16(tiny_onnx, tmp_path / "kept.onnx", keep_fp32=[first_conv, "Resize"]).path
    converted = onnx.load(str(out))
    types = float_types(converted)
    kept = [n for n in converted.graph.node if n.name == first_conv or n.op_type == "Resize"]
    assert len(kept) > 1
    assert all(types[name] == TensorProto.FLOAT for n in kept for name in n.input[:1])
    assert json.loads({p.key: p.value for p in converted.metadata_props}["fp16.kept_fp32"])[0]


def test_fp16_unknown_keep_entry_is_an_error(tiny_onnx: Path, tmp_path: Path):
    with pytest.raises(FacemaskError, match="matches no node"):
        to_fp16(tiny_onnx, tmp_path / "x.onnx", keep_fp32=["no/such/node"])


def test_fp16_outputs_close_to_fp32(fp16_onnx: Path, inputs, fp32_outputs, tmp_path: Path, run):
    emulated = tmp_path / "emulated.onnx"
    onnx.save(emulate_fp16(onnx.load(str(fp16_onnx))), str(emulated))
    for path in (fp16_onnx, emulated):
        logits, boxes = run(path, inputs)
        assert logits.dtype == np.float32
        assert np.abs(logits - fp32_outputs[0]).max() < FP16_MAX_ABS, path.name
        assert np.abs(boxes - fp32_outputs[1]).max() < FP16_MAX_ABS, path.name


def test_fp16_emulation_rounds_every_fp16_tensor(fp16_onnx: Path, float_types):
    fp16 = onnx.load(str(fp16_onnx))
    types = float_types(fp16)
    fp16_outputs = [name for n in fp16.graph.node for name in n.output if types.get(name) == TensorProto.FLOAT16]
    model = emulate_fp16(fp16)
    assert all(i.data_type != TensorProto.FLOAT16 for i in model.graph.initializer)
    to_half = [n for n in model.graph.node if n.op_type == "Cast" and n.attribute[0].i == TensorProto.FLOAT16]
    assert len(to_half) == len(fp16_outputs) > 100


def test_to_fp16_refuses_to_overwrite(fp16_onnx: Path, tiny_onnx: Path):
    with pytest.raises(FacemaskError, match="already exists"):
        to_fp16(tiny_onnx, fp16_onnx)
    with pytest.raises(FacemaskError, match="is the input model"):
        to_fp16(tiny_onnx, tiny_onnx, overwrite=True)
