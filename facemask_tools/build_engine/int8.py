"""FP32 ONNX -> INT8 Q/DQ ONNX by post-training calibration, in the form TensorRT's explicit
quantization expects.

- Weights: INT8 initialisers with a per-output-channel, symmetric `DequantizeLinear` (axis 0).
- Activations: symmetric INT8 (zero point 0), one scale per tensor, from calibration on images
  pre-processed exactly as the runtime does it (`facemask_sdk.preprocess.preprocess`).
- Conv biases stay float (TensorRT does not import INT32 `DequantizeLinear`); everything that is not
  INT8 is FP16 by default (`high_precision`, as ModelOpt does: TensorRT 11 runs the graph's own
  types), with the graph inputs and outputs FP32.
- Calibration (`facemask_tools.build_engine.calibration`): `minmax`, `entropy` or `percentile` on the graph after
  ONNX Runtime's `quant_pre_process`; the Q/DQ nodes are placed by ONNX Runtime's `QDQQuantizer`
  (what `quantize_static(quant_format=QDQ)` runs; NVIDIA ModelOpt's ONNX PTQ builds on the same).
- The calibration result (one FP32 range per tensor) is cached as JSON in `cache_dir` under a hash of
  the model bytes, the calibration images' bytes, the method and its settings and the
  pre-processing spec: a rebuild with the same inputs reads it and does not calibrate again.

    >>> to_int8(Path("models/facemask.onnx"), Path("models/facemask.int8.onnx"), images, method="percentile")
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facemask_sdk.errors import DataError, FacemaskError, ModelFileError
from facemask_sdk.files import write_atomically
from facemask_tools.build_engine.calibration import (
    CALIBRATOR_SETTINGS,
    DEFAULT_METHOD,
    METHODS,
    calibrate,
    calibration_key,
    read_cache,
    write_cache,
)
from facemask_tools.build_engine.precision import (
    CONVERSION_KEY,
    PRECISION_KEY,
    check_output_path,
    conversion_key,
    load_model,
    metadata,
    model_precision,
    model_spec,
    onnx_opset,
    set_metadata,
)

if TYPE_CHECKING:
    import onnx  # loaded where a model is converted, so the CLI can read the defaults cheaply

log = logging.getLogger(__name__)

DEFAULT_OP_TYPES = ("Conv", "Add")
"""Ops whose inputs get Q/DQ: TensorRT's recommendation (quantise the inputs of weighted ops and of
residual adds; it fuses the Q into the producing convolution and moves Q/DQ across pooling/resizing)."""
HIGH_PRECISIONS = ("fp16", "fp32")
STEM = "stem"
"""An `exclude` entry naming the model's first Conv (the one that reads the normalised image)."""
FIRST_STAGE = "/network/backbone/blocks.0/"
"""The backbone's first stage in a facemask-sdk export (EfficientNet's `blocks.0`, at half the input
resolution; 2 Convs in Lite0). An entry ending in "/" names the Convs of that module of the export."""
DEFAULT_EXCLUDE: tuple[str, ...] = (STEM, FIRST_STAGE)
"""Left in float unless told otherwise: 3 of Lite0's 182 Convs. Measured on the 640 px Lite0 shipped then (stage D)
(model card, "Where INT8 loses it"): every Conv in INT8 loses 5.2 pt mAP, the stem alone in float 3.5,
the stem and the first stage 1.5 (mAP@.5 -0.05 pt); more of the backbone in float gains no more."""
CALIBRATION_KEY = "int8.calibration"
"""`metadata_props` key with the calibration summary (method, images, cache key; JSON)."""


@dataclass
class Int8Report:
    """What `to_int8` did: where the model and the calibration cache are, and whether it was reused."""

    path: Path | None = None
    method: str = ""
    images: int = 0
    cache_path: Path | None = None
    cache_hit: bool = False
    calibration_seconds: float = 0.0
    quantized_conv: int = 0
    total_conv: int = 0
    excluded: list[str] = field(default_factory=list)
    high_precision: str = "fp16"

    def lines(self) -> list[str]:
        source = "reused cached calibration" if self.cache_hit else f"calibrated in {self.calibration_seconds:.1f} s"
        return [
            f"int8: {self.method} calibration on {self.images} images ({source}: {self.cache_path}); "
            f"{self.quantized_conv}/{self.total_conv} Conv quantised, the rest {self.high_precision.upper()}"
            + (f", {len(self.excluded)} node(s) kept in float" if self.excluded else "")
        ]


def to_int8(
    onnx_in: Path,
    onnx_out: Path,
    calib_images: Sequence[Path],
    method: str = DEFAULT_METHOD,
    cache_dir: Path | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    high_precision: str = "fp16",
    overwrite: bool = False,
) -> Int8Report:
    """Write the INT8 Q/DQ variant of `onnx_in` to `onnx_out`; the report has `.path` and the calibration.

    `calib_images`: image files (training split) for calibration. `method`: minmax, entropy or
    percentile (`DEFAULT_METHOD`, chosen by measurement). `cache_dir`: where calibration results are
    cached (default: a `.calib-cache` folder beside `onnx_out`). `exclude`: node names, op types or
    `STEM` (the first Conv) or module prefixes ending in "/" (their Convs) left unquantised; `()`
    quantises every `op_types` node.
    `high_precision`: the type of everything that is not INT8: `fp16` (default, as NVIDIA ModelOpt:
    TensorRT 11 runs the graph's own types, so FP32 there would run FP32 kernels; needs opset 19,
    the graph is upgraded) or `fp32`.
    """
    import onnx
    from onnxruntime.quantization import quant_pre_process

    onnx_in = Path(onnx_in)
    onnx_out = check_output_path(onnx_out, overwrite, inputs=(onnx_in,))
    if method not in METHODS:
        raise FacemaskError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    if high_precision not in HIGH_PRECISIONS:
        raise FacemaskError(f"high_precision must be one of {', '.join(HIGH_PRECISIONS)}, got {high_precision!r}")
    images = _check_images(calib_images)
    model = load_model(onnx_in)
    if model_precision(model) != "fp32":
        raise ModelFileError(f"{onnx_in} is already a {model_precision(model)} model; quantise the FP32 export")
    spec = model_spec(model, onnx_in)
    excluded_names = resolve_exclude(model, list(exclude))  # a typo fails here, not after calibrating
    cache_dir = Path(cache_dir) if cache_dir is not None else onnx_out.parent / ".calib-cache"
    key, key_data = calibration_key(onnx_in, images, method, tuple(op_types), spec)
    cache_path = cache_dir / f"int8-{method}-{key[:16]}.json"
    report = Int8Report(method=method, images=len(images), cache_path=cache_path)

    with tempfile.TemporaryDirectory(prefix="facemask-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(onnx_in), str(prepared), skip_symbolic_shape=True)
        ranges = read_cache(cache_path, key)
        report.cache_hit = ranges is not None
        if ranges is None:
            started = time.perf_counter()
            ranges = calibrate(prepared, images, spec, method, tuple(op_types), Path(tmp))
            report.calibration_seconds = time.perf_counter() - started
            write_cache(cache_path, key, key_data, ranges, report.calibration_seconds)
        else:
            log.info("calibration cache hit: %s", cache_path)
        quantized, report.excluded = _quantize(prepared, ranges, method, tuple(op_types), list(exclude))
    if high_precision == "fp16":
        quantized = _to_fp16_high_precision(quantized)
    report.high_precision = high_precision

    entries = metadata(model)
    entries[PRECISION_KEY] = "int8"
    entries[CONVERSION_KEY] = conversion_key(
        onnx_in, "int8", {"calibration": key, "exclude": sorted(excluded_names), "high_precision": high_precision}
    )
    entries[CALIBRATION_KEY] = json.dumps(
        {
            "method": method,
            "images": len(images),
            "op_types": list(op_types),
            "excluded": report.excluded,
            "high_precision": high_precision,
            "cache_key": key,
            **CALIBRATOR_SETTINGS[method],
        },
        sort_keys=True,
    )
    set_metadata(quantized, entries)
    quantized.producer_name, quantized.producer_version = model.producer_name, model.producer_version
    onnx.checker.check_model(quantized, full_check=True)
    report.total_conv, report.quantized_conv = _conv_counts(quantized)
    write_atomically(onnx_out, quantized.SerializeToString(), overwrite)
    report.path = onnx_out
    return report


def int8_conversion_key(
    onnx_in: Path,
    calib_images: Sequence[Path],
    method: str = DEFAULT_METHOD,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    high_precision: str = "fp16",
) -> str:
    """What an INT8 variant of `onnx_in` made with these options records (see `CONVERSION_KEY`): the
    calibration key covers the model, every image's bytes, the method and onnxruntime's version."""
    images = _check_images(calib_images)
    model = load_model(onnx_in)
    spec = model_spec(model, onnx_in)
    excluded_names = sorted(resolve_exclude(model, list(exclude)))  # `stem` and its node's name are one choice
    key, _ = calibration_key(Path(onnx_in), images, method, tuple(op_types), spec)
    return conversion_key(
        onnx_in, "int8", {"calibration": key, "exclude": excluded_names, "high_precision": high_precision}
    )


def _check_images(paths: Sequence[Path]) -> list[Path]:
    if isinstance(paths, (str, Path)):
        raise FacemaskError("calib_images must be a list of image files, not one path")
    images = [Path(p) for p in paths]
    if not images:
        raise DataError("INT8 calibration needs at least one image; pass images of the training split")
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"calibration image(s) not found: {', '.join(missing[:3])}")
    return images


def _quantize(
    prepared: Path, ranges: dict[str, tuple[float, float]], method: str, op_types: tuple[str, ...], exclude: list[str]
) -> tuple[onnx.ModelProto, list[str]]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QDQQuantizer, QuantType, TensorData, TensorsData

    model = onnx.shape_inference.infer_shapes(onnx.load(str(prepared)))
    opset = onnx_opset(model)
    if opset < 13:
        raise ModelFileError(f"per-channel INT8 needs ONNX opset 13 or newer; the model has opset {opset}")
    excluded = resolve_exclude(model, exclude)
    tensors = TensorsData(
        CalibrationMethod.MinMax,  # only the ranges are used from here on, whatever produced them
        {name: TensorData(lowest=np.float32(low), highest=np.float32(high)) for name, (low, high) in ranges.items()},
    )
    quantizer = QDQQuantizer(
        model,
        True,  # per_channel
        False,  # reduce_range
        QuantType.QInt8,  # weights
        QuantType.QInt8,  # activations
        tensors,
        None,  # nodes_to_quantize: all of op_types
        excluded,
        list(op_types),
        {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )
    quantizer.quantize_model()
    quantizer.model.topological_sort()  # what ONNX Runtime's save_model_to_file does first
    model = quantizer.model.model
    used = {node.domain or "" for node in model.graph.node} | {""}
    kept = [o for o in model.opset_import if (o.domain or "") in used or o.domain == "ai.onnx"]
    del model.opset_import[:]  # quant_pre_process's ORT optimiser declares every ORT domain
    model.opset_import.extend(kept)
    return model, excluded


def _to_fp16_high_precision(model: onnx.ModelProto) -> onnx.ModelProto:
    """The non-INT8 part of a Q/DQ graph in FP16: opset 19+ (FP16 Q/DQ scales), then the FP16 converter."""
    from onnx import version_converter

    from facemask_tools.build_engine.fp16 import FP16_QDQ_OPSET, convert_to_fp16

    opset = onnx_opset(model)
    if opset < FP16_QDQ_OPSET:
        model = version_converter.convert_version(model, FP16_QDQ_OPSET)
    converted, _ = convert_to_fp16(model)
    return converted


def resolve_exclude(model: onnx.ModelProto, exclude: Sequence[str]) -> list[str]:
    """Node names for `exclude`'s entries: `STEM`, a module prefix ending in "/" (its Conv nodes), or a
    node name or op type. ONNX graphs are topologically sorted (the spec requires it), so the first Conv
    is the stem, before and after `quant_pre_process`."""
    names: list[str] = []
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    for entry in exclude:
        if entry == STEM:
            matches = convs[:1]
        elif entry.endswith("/"):
            matches = [name for name in convs if name.startswith(entry)]
        else:
            matches = [n.name for n in model.graph.node if entry in (n.name, n.op_type)]
        if not matches:
            raise FacemaskError(f"exclude entry {entry!r} matches no node name or op type of the model")
        names.extend(m for m in matches if m not in names)
    return names


def _conv_counts(model: onnx.ModelProto) -> tuple[int, int]:
    """(Conv nodes, Conv nodes whose weight comes from a DequantizeLinear)."""
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    return len(convs), sum(1 for n in convs if n.input[1] in dq_outputs)
