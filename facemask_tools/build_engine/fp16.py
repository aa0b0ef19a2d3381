"""FP32 ONNX -> strongly typed FP16 ONNX with FP32 inputs and outputs (what TensorRT 11 builds from).

Every floating-point tensor of the graph becomes FP16 (initialisers, `Constant`s, node outputs,
`Cast(to=FLOAT)`), except:

- the graph inputs and outputs, which stay FP32: a `Cast` after `images` and before `logits`/`boxes`
  (the runtime feeds and reads exactly what it does for the FP32 model);
- the nodes named in `keep_fp32` (node names or op types), with `Cast`s at their borders;
- inputs that the ONNX standard types as FP32 only (`Resize` scales) and, below opset 19, Q/DQ nodes;
- nodes that consume an initialiser whose finite values overflow FP16 (|x| > 65504), found
  automatically (infinities, such as effdet's `-inf` max-pool padding, convert exactly).

This is the job of NVIDIA ModelOpt's AutoCast (`keep_io_types=True` plus a node block list), done here
with `onnx` alone because ModelOpt's ONNX extra pins `onnx`/`onnxruntime-gpu` versions that conflict
with this project's; the result is the same kind of graph: no precision is left for TensorRT to choose.

    >>> to_fp16(Path("models/facemask.onnx"), Path("models/facemask.fp16.onnx"))
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facemask_sdk.errors import FacemaskError, InternalError, ModelFileError
from facemask_sdk.files import write_atomically
from facemask_tools.build_engine.precision import (
    CONVERSION_KEY,
    PRECISION_KEY,
    check_output_path,
    conversion_key,
    load_model,
    metadata,
    model_precision,
    onnx_opset,
    set_metadata,
)

FP16_MAX = 65504.0
FP32_ONLY_INPUTS: dict[str, tuple[int, ...]] = {"Resize": (2,), "Upsample": (1,)}
"""Input positions typed `tensor(float)` only by the ONNX standard: they stay FP32 in any graph."""
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
FP16_QDQ_OPSET = 19
"""From opset 19 on, Q/DQ scales (and so DequantizeLinear outputs) may be FP16."""
OUTPUT_SUFFIX = "_fp16"
KEPT_KEY = "fp16.kept_fp32"
"""`metadata_props` key listing the nodes kept in FP32 (JSON list of node names)."""


@dataclass
class Fp16Report:
    """What the conversion did (printed by the CLI, checked by tests)."""

    path: Path | None = None
    nodes: int = 0
    fp16_nodes: int = 0
    kept_fp32: list[str] = field(default_factory=list)
    casts_added: int = 0
    initializers_converted: int = 0
    values_flushed_to_zero: int = 0

    def lines(self) -> list[str]:
        kept = ", ".join(self.kept_fp32[:5]) + (" ..." if len(self.kept_fp32) > 5 else "")
        return [
            f"fp16: {self.fp16_nodes}/{self.nodes} nodes in FP16, {len(self.kept_fp32)} kept in FP32"
            + (f" ({kept})" if kept else "")
            + f", {self.casts_added} Cast nodes added, {self.initializers_converted} initialisers converted"
            + (
                f", {self.values_flushed_to_zero} weights below FP16 range flushed to 0"
                if self.values_flushed_to_zero
                else ""
            )
        ]


def to_fp16(onnx_in: Path, onnx_out: Path, keep_fp32: list[str] | None = None, overwrite: bool = False) -> Fp16Report:
    """Write the FP16 variant of `onnx_in` to `onnx_out`; the report says what was converted (`.path`).

    `keep_fp32`: node names or op types to keep in FP32 (an entry that matches nothing is an error).
    Raises `FacemaskError` if `onnx_out` exists and `overwrite` is false.
    """
    onnx_in = Path(onnx_in)
    onnx_out = check_output_path(onnx_out, overwrite, inputs=(onnx_in,))
    model = load_model(onnx_in)
    if model_precision(model) != "fp32":
        raise ModelFileError(f"{onnx_in} is already a {model_precision(model)} model; convert the FP32 export")
    converted, report = convert_to_fp16(model, keep_fp32 or ())
    entries = metadata(model)
    entries[PRECISION_KEY] = "fp16"
    entries[CONVERSION_KEY] = fp16_conversion_key(onnx_in, keep_fp32)
    entries[KEPT_KEY] = json.dumps(report.kept_fp32)
    set_metadata(converted, entries)
    onnx.checker.check_model(converted, full_check=True)
    write_atomically(onnx_out, converted.SerializeToString(), overwrite)
    report.path = onnx_out
    return report


def fp16_conversion_key(onnx_in: Path, keep_fp32: list[str] | None = None) -> str:
    """What an FP16 variant of `onnx_in` made with these options records (see `CONVERSION_KEY`)."""
    return conversion_key(onnx_in, "fp16", {"keep_fp32": list(keep_fp32 or [])})


def convert_to_fp16(model: onnx.ModelProto, keep_fp32: Iterable[str] = ()) -> tuple[onnx.ModelProto, Fp16Report]:
    """The FP16 graph of an FP32 `model` (not modified) and a report; see the module docs."""
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        raise ModelFileError("graphs with sub-graphs (If/Loop/Scan) are not supported by the FP16 converter")
    types = _elem_types(graph)
    is_float = lambda name: bool(name) and types.get(name) == TensorProto.FLOAT  # noqa: E731
    nodes = list(graph.node)
    initializers = {init.name: init for init in graph.initializer}
    opset = onnx_opset(model)

    keep = _resolve_keep(nodes, keep_fp32)
    keep |= {i for i, n in enumerate(nodes) if n.op_type in QDQ_OPS and opset < FP16_QDQ_OPSET}
    keep |= _overflow_consumers(nodes, initializers)
    report = Fp16Report(nodes=len(nodes), kept_fp32=sorted(nodes[i].name or f"#{i}:{nodes[i].op_type}" for i in keep))

    # graph outputs produced in FP16 get a final Cast back to FP32 under their original names
    outputs = {o.name for o in graph.output if is_float(o.name)}
    renamed: dict[str, str] = {}
    for index, node in enumerate(nodes):
        if index in keep:
            continue
        for pos, name in enumerate(node.output):
            if name in outputs:
                renamed[name] = node.output[pos] = name + OUTPUT_SUFFIX
    for node in nodes:
        for pos, name in enumerate(node.input):
            if name in renamed:
                node.input[pos] = renamed[name]
    for old, new in renamed.items():
        types[new] = types[old]

    produced_fp16 = set()
    for index, node in enumerate(nodes):
        if index not in keep:
            produced_fp16.update(name for name in node.output if is_float(name))
            _retarget_attributes(node)
    report.fp16_nodes = len(nodes) - len(keep)

    # which precisions each float initialiser is needed in
    needs: dict[str, set[str]] = defaultdict(set)
    for index, node in enumerate(nodes):
        for pos, name in enumerate(node.input):
            if name in initializers and is_float(name):
                needs[name].add(_required(node, pos, index in keep))
    fp16_names = _convert_initializers(graph, initializers, needs, report)

    new_nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}
    for index, node in enumerate(nodes):
        for pos, name in enumerate(node.input):
            if not is_float(name):
                continue
            need = _required(node, pos, index in keep)
            if name in initializers:
                if need == "fp16":
                    node.input[pos] = fp16_names[name]
                continue
            have = "fp16" if name in produced_fp16 else "fp32"
            if have != need:
                to = TensorProto.FLOAT16 if need == "fp16" else TensorProto.FLOAT
                if (name, to) not in casts:
                    casts[(name, to)] = f"{name}_cast_{need}"
                    new_nodes.append(
                        helper.make_node("Cast", [name], [casts[(name, to)]], name=f"{name}/Cast_{need}", to=to)
                    )
                node.input[pos] = casts[(name, to)]
        new_nodes.append(node)
    for old, new in renamed.items():
        new_nodes.append(helper.make_node("Cast", [new], [old], name=f"{old}/Cast_fp32", to=TensorProto.FLOAT))
    report.casts_added = len(casts) + len(renamed)

    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except onnx.shape_inference.InferenceError as exc:
        raise InternalError(f"the FP16 graph is not type-consistent: {exc}") from None
    return model, report


def _elem_types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.output, *graph.value_info)}
    types.update({init.name: init.data_type for init in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
                elif attr.name in ("value_float", "value_floats"):
                    types[node.output[0]] = TensorProto.FLOAT
    return types


def _resolve_keep(nodes: list[onnx.NodeProto], keep_fp32: Iterable[str]) -> set[int]:
    keep: set[int] = set()
    for entry in keep_fp32:
        matches = {i for i, n in enumerate(nodes) if n.name == entry or n.op_type == entry}
        if not matches:
            examples = ", ".join(n.name for n in nodes[:3] if n.name)
            raise FacemaskError(
                f"keep_fp32 entry {entry!r} matches no node name or op type of the model (names look like {examples})"
            )
        keep |= matches
    return keep


def _overflow_consumers(nodes: list[onnx.NodeProto], initializers: dict[str, TensorProto]) -> set[int]:
    """Nodes that read an FP32 initialiser with values beyond the FP16 range: they stay FP32."""
    overflowing = {
        name
        for name, init in initializers.items()
        if init.data_type == TensorProto.FLOAT and _overflows(numpy_helper.to_array(init))
    }
    return {i for i, n in enumerate(nodes) if overflowing.intersection(n.input)}


def _required(node: onnx.NodeProto, position: int, kept: bool) -> str:
    if kept or position in FP32_ONLY_INPUTS.get(node.op_type, ()):
        return "fp32"
    return "fp16"


def _retarget_attributes(node: onnx.NodeProto) -> None:
    """Attributes that fix an FP32 output type (Cast `to`, Constant / ConstantOfShape values) -> FP16."""
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
            attr.i = TensorProto.FLOAT16
        elif (
            node.op_type in ("Constant", "ConstantOfShape")
            and attr.name == "value"
            and attr.t.data_type == TensorProto.FLOAT
        ):
            attr.t.CopyFrom(numpy_helper.from_array(_to_half(numpy_helper.to_array(attr.t)), attr.t.name))
        elif node.op_type == "Constant" and attr.name in ("value_float", "value_floats"):
            value = np.array(attr.f if attr.name == "value_float" else list(attr.floats), dtype=np.float32)
            node.ClearField("attribute")
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(_to_half(value))))
            return


def _convert_initializers(
    graph: onnx.GraphProto, initializers: dict[str, TensorProto], needs: dict[str, set[str]], report: Fp16Report
) -> dict[str, str]:
    """Convert FP32 initialisers needed in FP16 (in place, or as a copy when FP32 users remain)."""
    names: dict[str, str] = {}
    for name, wanted in needs.items():
        if "fp16" not in wanted:
            continue
        init = initializers[name]
        array = numpy_helper.to_array(init)
        half = _to_half(array)
        report.values_flushed_to_zero += int(np.count_nonzero((half == 0) & (array != 0)))
        report.initializers_converted += 1
        if wanted == {"fp16"}:
            init.CopyFrom(numpy_helper.from_array(half, name))
            names[name] = name
        else:
            names[name] = name + OUTPUT_SUFFIX
            graph.initializer.append(numpy_helper.from_array(half, names[name]))
    return names


def _overflows(array: np.ndarray) -> bool:
    """Finite values beyond the FP16 range (infinities and NaN convert exactly)."""
    finite = array[np.isfinite(array)]
    return bool(finite.size) and float(np.abs(finite).max()) > FP16_MAX


def _to_half(array: np.ndarray) -> np.ndarray:
    if _overflows(array):
        raise InternalError("an initialiser beyond the FP16 range reached the converter")  # filtered before
    return array.astype(np.float16)


def emulate_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP32 graph that reproduces the FP16 graph `model` as FP16 hardware runs it: every tensor
    the FP16 graph holds in FP16 is rounded to FP16 (Cast to FP16 and back), every op computes in FP32.

    For measuring on CPUs: ONNX Runtime's CPU provider has no FP16 kernel for most ops and, running
    them in FP32, drops the FP16 rounding between consecutive ops (it removes the Cast pairs it
    inserts), so the FP16 file itself would look more accurate there than it is on a GPU.
    """
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = model.graph
    types = _elem_types(graph)
    half = TensorProto.FLOAT16
    for init in graph.initializer:
        if init.data_type == half:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == half:
                attr.i = TensorProto.FLOAT
            elif attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == half:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32), attr.t.name))
        rounding = []
        for pos, name in enumerate(node.output):
            if types.get(name) == half:
                node.output[pos] = f"{name}_unrounded"
                rounding.append(helper.make_node("Cast", [node.output[pos]], [f"{name}_as_fp16"], to=half))
                rounding.append(helper.make_node("Cast", [f"{name}_as_fp16"], [name], to=TensorProto.FLOAT))
        nodes += [node, *rounding]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)
