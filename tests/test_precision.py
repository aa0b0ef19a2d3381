"""FP16 and INT8 ONNX variants of the tiny model: graph structure, accuracy against FP32 on the sample
images, calibration determinism and cache reuse, and the `build-engine` command without TensorRT."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from onnx import TensorProto, numpy_helper  # noqa: E402

from facemask_tools.build_engine import calibration  # noqa: E402
from facemask_tools.build_engine.fp16 import emulate_fp16, to_fp16  # noqa: E402
from facemask_tools.build_engine.int8 import to_int8  # noqa: E402
from facemask_tools.build_engine.pipeline import calibration_images, output_paths  # noqa: E402
from facemask_tools.build_engine.precision import PRECISION_KEY, variant_path  # noqa: E402
from facemask_tools.build_engine.tensorrt_build import tensorrt_version  # noqa: E402
from facemask_sdk.errors import FacemaskError  # noqa: E402
from facemask_sdk.image_io import read_image  # noqa: E402
from facemask_sdk.preprocess import preprocess  # noqa: E402
from facemask_sdk.spec import METADATA_KEY, ModelSpec  # noqa: E402

# Tolerances on the randomly initialised tiny model (logits spread ~0.45, box codes ~0.75):
FP16_MAX_ABS = 0.05  # observed ~0.015 (file on ORT CPU) and ~0.026 (emulated FP16 storage)
INT8_MIN_CORRELATION = 0.9  # observed 0.95-0.98 with 4 calibration images
INT8_MAX_MEAN_ABS_RATIO = 0.35  # mean |int8 - fp32| / std(fp32); observed 0.14-0.24


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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


@pytest.fixture(scope="module")
def inputs(tiny_onnx: Path, sample_images: list[Path]) -> list[np.ndarray]:
    model = onnx.load(str(tiny_onnx))
    spec = ModelSpec.from_json({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    return [preprocess(read_image(p), spec)[0][None] for p in sample_images]


@pytest.fixture(scope="module")
def fp32_outputs(tiny_onnx: Path, inputs) -> tuple[np.ndarray, np.ndarray]:
    return run(tiny_onnx, inputs)


@pytest.fixture(scope="module")
def fp16_onnx(tiny_onnx: Path, tmp_path_factory) -> Path:
    return to_fp16(tiny_onnx, tmp_path_factory.mktemp("fp16") / "tiny.fp16.onnx").path


@pytest.fixture(scope="module")
def int8_onnx(tiny_onnx: Path, sample_images: list[Path], tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("int8")
    return to_int8(tiny_onnx, folder / "tiny.int8.onnx", sample_images, method="minmax", cache_dir=folder / "cache").path


# -- FP16 graph -------------------------------------------------------------------------------------


def test_fp16_graph_is_fp16_inside_with_fp32_io(fp16_onnx: Path):
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


def test_fp16_keep_fp32_by_name_and_type(tiny_onnx: Path, tmp_path: Path):
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


def test_fp16_outputs_close_to_fp32(fp16_onnx: Path, inputs, fp32_outputs, tmp_path: Path):
    emulated = tmp_path / "emulated.onnx"
    onnx.save(emulate_fp16(onnx.load(str(fp16_onnx))), str(emulated))
    for path in (fp16_onnx, emulated):
        logits, boxes = run(path, inputs)
        assert logits.dtype == np.float32
        assert np.abs(logits - fp32_outputs[0]).max() < FP16_MAX_ABS, path.name
        assert np.abs(boxes - fp32_outputs[1]).max() < FP16_MAX_ABS, path.name


def test_fp16_emulation_rounds_every_fp16_tensor(fp16_onnx: Path):
    fp16 = onnx.load(str(fp16_onnx))
    types = float_types(fp16)
    fp16_outputs = [name for n in fp16.graph.node for name in n.output if types.get(name) == TensorProto.FLOAT16]
    model = emulate_fp16(fp16)
    assert all(i.data_type != TensorProto.FLOAT16 for i in model.graph.initializer)
    to_half = [n for n in model.graph.node if n.op_type == "Cast" and n.attribute[0].i == TensorProto.FLOAT16]
    assert len(to_half) == len(fp16_outputs) > 100


# -- INT8 graph -------------------------------------------------------------------------------------


def test_int8_every_conv_weight_is_per_channel_int8(int8_onnx: Path):
    model = onnx.load(str(int8_onnx))
    onnx.checker.check_model(model, full_check=True)
    inits = {i.name: i for i in model.graph.initializer}
    producers = {out: n for n in model.graph.node for out in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
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


def test_int8_high_precision_is_fp16_by_default(int8_onnx: Path, tiny_onnx: Path, sample_images, tmp_path: Path):
    model = onnx.load(str(int8_onnx))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 19  # FP16 Q/DQ scales
    types = float_types(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(types[name] == TensorProto.FLOAT16 for n in convs for name in (*n.input, *n.output) if name)
    fp32 = onnx.load(str(to_int8(tiny_onnx, tmp_path / "fp32.onnx", sample_images, "minmax", tmp_path, high_precision="fp32").path))
    types = float_types(fp32)
    assert all(types[name] == TensorProto.FLOAT for n in fp32.graph.node if n.op_type == "Conv" for name in n.input if name)
    assert not any(i.data_type == TensorProto.FLOAT16 for i in fp32.graph.initializer)


def test_int8_preserves_metadata(tiny_onnx: Path, int8_onnx: Path):
    before = {p.key: p.value for p in onnx.load(str(tiny_onnx)).metadata_props}
    after = {p.key: p.value for p in onnx.load(str(int8_onnx)).metadata_props}
    assert {k: after[k] for k in before} == before
    assert after[PRECISION_KEY] == "int8"
    calibration_info = json.loads(after["int8.calibration"])
    assert calibration_info["method"] == "minmax" and calibration_info["images"] == 4


def test_int8_outputs_close_to_fp32(int8_onnx: Path, tiny_onnx: Path, sample_images, inputs, fp32_outputs, tmp_path: Path):
    # The INT8+FP16 file is measured through the FP16 emulation: ONNX Runtime's CPU transformer
    # `WeightBiasQuantization` (ORT_ENABLE_BASIC and up) turns float Conv biases into INT32 with a scale
    # input_scale * weight_scale computed in FP16, which loses precision (correlation ~0.84 here, ~0.96
    # with `disabled_optimizers=["WeightBiasQuantization"]`). TensorRT keeps such biases in float.
    emulated = tmp_path / "emulated.onnx"
    onnx.save(emulate_fp16(onnx.load(str(int8_onnx))), str(emulated))
    int8_fp32 = to_int8(tiny_onnx, tmp_path / "fp32.onnx", sample_images, "minmax", tmp_path, high_precision="fp32").path
    for path in (emulated, int8_fp32):
        for actual, expected in zip(run(path, inputs), fp32_outputs):
            a, e = actual.ravel(), expected.ravel()
            assert np.corrcoef(a, e)[0, 1] > INT8_MIN_CORRELATION, path.name
            assert np.abs(a - e).mean() < INT8_MAX_MEAN_ABS_RATIO * e.std(), path.name


def test_int8_exclude_keeps_a_conv_in_float(tiny_onnx: Path, sample_images, tmp_path: Path):
    model = onnx.load(str(tiny_onnx))
    first_conv = next(n.name for n in model.graph.node if n.op_type == "Conv")
    report = to_int8(tiny_onnx, tmp_path / "x.onnx", sample_images[:1], "minmax", tmp_path, exclude=[first_conv])
    assert report.excluded == [first_conv] and report.quantized_conv == report.total_conv - 1
    with pytest.raises(FacemaskError, match="matches no node"):
        to_int8(tiny_onnx, tmp_path / "y.onnx", sample_images[:1], "minmax", tmp_path, exclude=["nope"])


# -- calibration: deterministic, cached ---------------------------------------------------------------


def test_calibration_is_deterministic_and_cached(tiny_onnx: Path, sample_images, tmp_path: Path, monkeypatch):
    first = to_int8(tiny_onnx, tmp_path / "a.onnx", sample_images, "percentile", tmp_path / "cache-a")
    second = to_int8(tiny_onnx, tmp_path / "b.onnx", sample_images, "percentile", tmp_path / "cache-b")
    assert not first.cache_hit and not second.cache_hit
    ranges_a = json.loads(first.cache_path.read_text())["ranges"]
    ranges_b = json.loads(second.cache_path.read_text())["ranges"]
    assert ranges_a == ranges_b and len(ranges_a) > 100
    assert sha256(first.path) == sha256(second.path)

    def no_calibration(*args, **kwargs):
        raise AssertionError("the calibration cache should have been used")

    monkeypatch.setattr("facemask_tools.build_engine.int8.calibrate", no_calibration)
    third = to_int8(tiny_onnx, tmp_path / "c.onnx", sample_images, "percentile", tmp_path / "cache-a")
    assert third.cache_hit and third.cache_path == first.cache_path
    assert sha256(third.path) == sha256(first.path)
    with pytest.raises(AssertionError, match="cache should have been used"):  # other images: new key
        to_int8(tiny_onnx, tmp_path / "d.onnx", sample_images[:2], "percentile", tmp_path / "cache-a")


@pytest.mark.parametrize(
    "change, same",
    [
        ({}, True),
        ({"method": "minmax"}, False),
        ({"images": 3}, False),
        ({"op_types": ("Conv",)}, False),
        ({"image_size": (128, 128)}, False),
    ],
)
def test_calibration_key_covers_its_inputs(tiny_onnx: Path, sample_images, change, same):
    spec = ModelSpec.from_json({p.key: p.value for p in onnx.load(str(tiny_onnx)).metadata_props}[METADATA_KEY])
    base, _ = calibration.calibration_key(tiny_onnx, sample_images, "percentile", ("Conv", "Add"), spec)
    changed_spec = dataclasses.replace(spec, image_size=change["image_size"]) if "image_size" in change else spec
    key, _ = calibration.calibration_key(
        tiny_onnx,
        sample_images[: change.get("images", len(sample_images))],
        change.get("method", "percentile"),
        change.get("op_types", ("Conv", "Add")),
        changed_spec,
    )
    assert (key == base) is same


def entropy_reference(hist: np.ndarray, edges: np.ndarray, nq: int = 128, start: int = 128) -> float:
    """Loop transcription of pytorch-quantization's `_compute_amax_entropy` (stride 1)."""
    bins = hist.astype(np.float64).copy()
    bins[0] = bins[1]
    divergences = []
    for i in range(start, len(bins) + 1):
        groups = np.digitize(range(i), np.linspace(0, i, num=nq + 1)) - 1
        groups[bins[:i] == 0] = -1
        sums, counts = np.zeros(nq), np.zeros(nq)
        for index, group in enumerate(groups):
            if group != -1:
                sums[group] += bins[index]
                counts[group] += 1
        q = np.array([sums[g] / counts[g] if g != -1 else 0.0 for g in groups])
        p = bins[:i].copy()
        p[-1] += bins[i:].sum()
        p, q = p / p.sum(), q / q.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            divergences.append(np.where(p > 0, p * np.log(p / q), 0.0).sum())
    divergences = np.array(divergences)
    return float(edges[len(divergences) - 1 - np.argmin(divergences[::-1]) + start])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_threshold_matches_nvidia_reference(seed: int):
    rng = np.random.default_rng(seed)
    values = np.abs(rng.standard_t(3 + seed, 20000)) if seed % 2 else np.maximum(rng.normal(0.5, 1.0, 20000), 0)
    hist, edges = np.histogram(values, bins=300)
    assert calibration.entropy_amax(hist, edges) == entropy_reference(hist, edges)
    assert 0 < calibration.entropy_amax(hist, edges) <= edges[-1]


# -- paths and calibration images -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "precision, out, expected, error",
    [
        ("fp16", None, ("m/model.fp16.onnx", "m/model.fp16.engine"), None),
        ("int8", None, ("m/model.int8.onnx", "m/model.int8.engine"), None),
        ("fp32", None, ("m/model.onnx", "m/model.engine"), None),
        ("int8", "x/q.onnx", ("x/q.onnx", "x/q.engine"), None),
        ("int8", "x/q.plan", ("x/q.onnx", "x/q.plan"), None),
        ("int8", "x/q.bin", None, "must end in .onnx"),
    ],
)
def test_output_paths(precision, out, expected, error):
    if error:
        with pytest.raises(FacemaskError, match=error):
            output_paths(Path("m/model.onnx"), precision, Path(out))
        return
    onnx_path, engine = output_paths(Path("m/model.onnx"), precision, Path(out) if out else None)
    assert (str(onnx_path), str(engine)) == expected
    if out is None:
        assert variant_path(Path("m/model.onnx"), precision) == onnx_path


def test_calibration_images_from_a_folder(sample_images):
    folder = sample_images[0].parent
    assert calibration_images(folder, 10) == sample_images
    assert calibration_images(folder, 2) == [sample_images[0], sample_images[2]]
    with pytest.raises(FacemaskError, match="positive integer"):
        calibration_images(folder, 0)


# -- the command line ----------------------------------------------------------------------------------


@pytest.fixture()
def model_copy(tiny_onnx: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(tiny_onnx, tmp_path / "model.onnx"))


@pytest.mark.parametrize("precision", ["--int8", "--fp16"])
def test_cli_onnx_only(run_cli, model_copy: Path, precision: str, sample_images):
    args = ["build-engine", "--onnx", model_copy, precision, "--calib-data", sample_images[0].parent, "--onnx-only"]
    result = run_cli(args)
    assert result.returncode == 0, result.stderr
    written = model_copy.with_name(f"model.{precision[2:]}.onnx")
    assert written.is_file()
    assert "on the target device run: facemask-sdk build-engine --onnx" in result.stdout
    again = run_cli(args)  # the same conversion again: identical result, file left alone
    assert again.returncode == 0 and "is up to date" in again.stdout, again.stderr
    written.write_bytes(written.read_bytes() + b"\0")  # now it differs: never overwrite without --force
    changed = written.read_bytes()
    refused = run_cli(args)
    assert refused.returncode != 0 and "already exists and differs" in refused.stderr and "--force" in refused.stderr
    assert written.read_bytes() == changed
    forced = run_cli([*args, "--force"])
    assert forced.returncode == 0, forced.stderr
    assert written.read_bytes() != changed
    assert not list(written.parent.glob(".*.check.onnx"))


@pytest.mark.skipif(tensorrt_version() is not None, reason="TensorRT is installed here")
def test_cli_without_tensorrt_says_where_to_build(run_cli, model_copy: Path):
    result = run_cli(["build-engine", "--onnx", model_copy, "--fp16"])
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "TensorRT is not installed" in lines[0] and "target device" in lines[0]
    assert f"facemask-sdk build-engine --onnx {model_copy.with_name('model.fp16.onnx')} --fp16 --batch 1" in lines[0]
    assert model_copy.with_name("model.fp16.onnx").is_file()  # the precision ONNX is written anyway


def test_cli_rejects_conflicting_batch_options(run_cli, model_copy: Path):
    result = run_cli(["build-engine", "--onnx", model_copy, "--batch", "2", "--dynamic-batch", "1,2,4", "--onnx-only"])
    assert result.returncode != 0 and "either --batch" in result.stderr


def test_cli_static_model_refuses_dynamic_batch(run_cli, model_copy: Path):
    result = run_cli(["build-engine", "--onnx", model_copy, "--dynamic-batch", "1,2,4", "--onnx-only"])
    assert result.returncode != 0 and "--dynamic-batch" in result.stderr and "static batch of 1" in result.stderr
    assert not model_copy.with_name("model.fp16.onnx").exists()  # checked before any conversion


def test_to_fp16_refuses_to_overwrite(fp16_onnx: Path, tiny_onnx: Path):
    with pytest.raises(FacemaskError, match="already exists"):
        to_fp16(tiny_onnx, fp16_onnx)
    with pytest.raises(FacemaskError, match="is the input model"):
        to_fp16(tiny_onnx, tiny_onnx, overwrite=True)


def test_up_to_date_is_read_from_the_recorded_key_not_a_new_conversion(model_copy: Path, monkeypatch):
    """A second `build` with the same model and options converts nothing; a changed source model makes
    the existing variant stale, and it is refused rather than overwritten."""
    from facemask_tools.build_engine import fp16, pipeline
    from facemask_tools.build_engine.precision import CONVERSION_KEY, metadata

    first = pipeline.build(onnx=model_copy, precision="fp16", onnx_only=True, echo=lambda line: None)
    recorded = metadata(onnx.load(str(first.precision_onnx)))[CONVERSION_KEY]
    assert recorded == fp16.fp16_conversion_key(model_copy)

    def no_conversion(*args, **kwargs):
        raise AssertionError("an up-to-date variant must not be converted again")

    monkeypatch.setattr(fp16, "to_fp16", no_conversion)
    again = pipeline.build(onnx=model_copy, precision="fp16", onnx_only=True, echo=lambda line: None)
    assert any("is up to date" in line for line in again.lines)
    model = onnx.load(str(model_copy))
    model.producer_version = "re-exported"
    onnx.save(model, str(model_copy))
    with pytest.raises(FacemaskError, match="already exists and differs"):
        pipeline.build(onnx=model_copy, precision="fp16", onnx_only=True, echo=lambda line: None)
