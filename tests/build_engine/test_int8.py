"""The INT8 ONNX variant (facemask_tools.build_engine.int8) of the tiny model: per-channel INT8 conv weights,
symmetric activations with FP32 I/O, FP16 high precision by default, metadata kept, outputs close to FP32,
the stem (or any named node) kept in float."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from onnx import TensorProto, numpy_helper  # noqa: E402

from facemask_sdk.errors import FacemaskError  # noqa: E402
from facemask_tools.build_engine.fp16 import emulate_fp16  # noqa: E402
from facemask_tools.build_engine.int8 import (  # noqa: E402
    DEFAULT_EXCLUDE,
    FIRST_STAGE,
    STEM,
    int8_conversion_key,
    resolve_exclude,
    to_int8,
)
from facemask_tools.build_engine.precision import PRECISION_KEY  # noqa: E402

# Tolerances on the randomly initialised tiny model (logits spread ~0.45, box codes ~0.75):
INT8_MIN_CORRELATION = 0.9  # observed 0.95-0.98 with 4 calibration images
INT8_MAX_MEAN_ABS_RATIO = 0.35  # mean |int8 - fp32| / std(fp32); observed 0.14-0.24


@pytest.fixture(scope="module")
def int8_onnx(tiny_onnx: Path, sample_images: list[Path], tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("int8")
    return to_int8(
        tiny_onnx, folder / "tiny.int8.onnx", sample_images, method="minmax", cache_dir=folder / "cache"
    ).path


def test_int8_every_conv_weight_but_the_first_stage_is_per_channel_int8(int8_onnx: Path):
    model = onnx.load(str(int8_onnx))
    onnx.checker.check_model(model, full_check=True)
    inits = {i.name: i for i in model.graph.initializer}
    producers = {out: n for n in model.graph.node for out in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    in_float = [n for n in convs if n.input[1] in inits]  # the default keeps the stem and the first stage float
    assert [n.name for n in in_float] == [n.name for n in convs[:3]]
    assert all(inits[n.input[1]].data_type == TensorProto.FLOAT16 for n in in_float)
    convs = convs[3:]
    assert convs
    for conv in convs:
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear", conv.name
        axis = {a.name: a.i for a in dq.attribute}.get("axis")
        assert axis == 0, conv.name
        weight = inits[dq.input[0]]
        assert weight.data_type == TensorProto.INT8
        scale = numpy_helper.to_array(inits[dq.input[1]])
        assert scale.shape == (weight.dims[0],) and np.all(scale > 0), conv.name
        assert np.all(numpy_helper.to_array(inits[dq.input[2]]) == 0)
        if len(conv.input) > 2:  # bias stays float: TensorRT imports no INT32 DequantizeLinear
            assert inits[conv.input[2]].data_type == TensorProto.FLOAT16


def test_int8_activations_are_symmetric_and_io_fp32(int8_onnx: Path):
    model = onnx.load(str(int8_onnx))
    inits = {i.name: i for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    activation_q = [n for n in qdq if n.op_type == "QuantizeLinear"]
    assert activation_q
    for node in qdq:
        zero_point = numpy_helper.to_array(inits[node.input[2]])
        assert zero_point.dtype == np.int8 and np.all(zero_point == 0), node.name
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT, value.name
    assert not any(i.data_type == TensorProto.INT32 for i in model.graph.initializer)


def test_int8_high_precision_is_fp16_by_default(
    int8_onnx: Path, tiny_onnx: Path, sample_images, tmp_path: Path, float_types
):
    model = onnx.load(str(int8_onnx))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 19  # FP16 Q/DQ scales
    types = float_types(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(types[name] == TensorProto.FLOAT16 for n in convs for name in (*n.input, *n.output) if name)
    fp32 = onnx.load(
        str(to_int8(tiny_onnx, tmp_path / "fp32.onnx", sample_images, "minmax", tmp_path, high_precision="fp32").path)
    )
    types = float_types(fp32)
    assert all(
        types[name] == TensorProto.FLOAT for n in fp32.graph.node if n.op_type == "Conv" for name in n.input if name
    )
    assert not any(i.data_type == TensorProto.FLOAT16 for i in fp32.graph.initializer)


def test_int8_preserves_metadata(tiny_onnx: Path, int8_onnx: Path):
    before = {p.key: p.value for p in onnx.load(str(tiny_onnx)).metadata_props}
    after = {p.key: p.value for p in onnx.load(str(int8_onnx)).metadata_props}
    assert {k: after[k] for k in before} == before
    assert after[PRECISION_KEY] == "int8"
    calibration_info = json.loads(after["int8.calibration"])
    assert calibration_info["method"] == "minmax" and calibration_info["images"] == 4


def test_int8_outputs_close_to_fp32(
    int8_onnx: Path, tiny_onnx: Path, sample_images, inputs, fp32_outputs, tmp_path: Path, run
):
    # The INT8+FP16 file is measured through the FP16 emulation: ONNX Runtime's CPU transformer
    # `WeightBiasQuantization` (ORT_ENABLE_BASIC and up) turns float Conv biases into INT32 with a scale
    # input_scale * weight_scale computed in FP16, which loses precision (correlation ~0.84 here, ~0.96
    # with `disabled_optimizers=["WeightBiasQuantization"]`). TensorRT keeps such biases in float.
    emulated = tmp_path / "emulated.onnx"
    onnx.save(emulate_fp16(onnx.load(str(int8_onnx))), str(emulated))
    int8_fp32 = to_int8(
        tiny_onnx, tmp_path / "fp32.onnx", sample_images, "minmax", tmp_path, high_precision="fp32"
    ).path
    for path in (emulated, int8_fp32):
        for actual, expected in zip(run(path, inputs), fp32_outputs):
            a, e = actual.ravel(), expected.ravel()
            assert np.corrcoef(a, e)[0, 1] > INT8_MIN_CORRELATION, path.name
            assert np.abs(a - e).mean() < INT8_MAX_MEAN_ABS_RATIO * e.std(), path.name


def test_int8_exclude_keeps_named_nodes_in_float(tiny_onnx: Path, int8_onnx: Path, sample_images, tmp_path: Path):
    model = onnx.load(str(tiny_onnx))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert resolve_exclude(model, [STEM]) == convs[:1]
    first_stage = resolve_exclude(model, [FIRST_STAGE])  # a module prefix names its Convs, in graph order
    assert first_stage == convs[1:3] and all(name.startswith(FIRST_STAGE) for name in first_stage)
    default = json.loads({p.key: p.value for p in onnx.load(str(int8_onnx)).metadata_props}["int8.calibration"])
    assert default["excluded"] == resolve_exclude(model, DEFAULT_EXCLUDE) == convs[:3]
    named = to_int8(tiny_onnx, tmp_path / "x.onnx", sample_images[:1], "minmax", tmp_path, exclude=[STEM, convs[4]])
    assert named.excluded == [convs[0], convs[4]] and named.quantized_conv == named.total_conv - 2
    everything = to_int8(tiny_onnx, tmp_path / "y.onnx", sample_images[:1], "minmax", tmp_path, exclude=())
    assert everything.excluded == [] and everything.quantized_conv == everything.total_conv


def test_int8_unknown_exclude_fails_before_calibrating(tiny_onnx: Path, sample_images, tmp_path: Path):
    with pytest.raises(FacemaskError, match="'nope' matches no node"):
        to_int8(tiny_onnx, tmp_path / "y.onnx", sample_images[:1], "minmax", tmp_path / "cache", exclude=["nope"])
    assert not (tmp_path / "cache").exists() and not (tmp_path / "y.onnx").exists()


def test_int8_conversion_key_records_the_layers_not_their_spelling(tiny_onnx: Path, sample_images):
    """`stem` and the stem's node name make the same file, so an existing variant is up to date for both;
    a typo is named as such rather than reported as a differing file."""
    first_conv = next(n.name for n in onnx.load(str(tiny_onnx)).graph.node if n.op_type == "Conv")
    by_alias = int8_conversion_key(tiny_onnx, sample_images[:1], "minmax", exclude=[STEM])
    assert by_alias == int8_conversion_key(tiny_onnx, sample_images[:1], "minmax", exclude=[first_conv])
    assert by_alias != int8_conversion_key(tiny_onnx, sample_images[:1], "minmax", exclude=())
    with pytest.raises(FacemaskError, match="'nope' matches no node"):
        int8_conversion_key(tiny_onnx, sample_images[:1], "minmax", exclude=["nope"])
