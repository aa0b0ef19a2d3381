"""Precision variants of the exported model: FP16 and calibrated INT8 ONNX graphs for TensorRT.

TensorRT 11 builds only strongly typed networks (no `BuilderFlag.FP16`/`INT8`, no calibrators): the
precision is written into the ONNX graph, FP16 as FP16 tensors and INT8 as Q/DQ nodes. TensorRT 10
accepts the same graphs. This module holds what both converters share (reading the model and its
spec, metadata, opset, output checks); it imports neither converter, which live in
`facemask_tools.build_engine.fp16` and `facemask_tools.build_engine.int8` (re-exported by the package):

    >>> from facemask_tools.build_engine import to_fp16, to_int8
    >>> to_fp16(Path("models/facemask.onnx"), Path("models/facemask.fp16.onnx"))
    >>> to_int8(Path("models/facemask.onnx"), Path("models/facemask.int8.onnx"), images, method="entropy")

Both keep the graph's inputs and outputs FP32 (`images`, `logits`, `boxes`), so every runtime feeds
and reads them exactly as the FP32 model, and both copy the model's `metadata_props` and add a
`precision` entry (`fp16` / `int8`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facemask_sdk.errors import FacemaskError, ModelFileError
from facemask_sdk.files import file_sha256
from facemask_sdk.models import PRECISIONS, variant_path
from facemask_sdk.spec import ModelSpec, spec_from_metadata

if TYPE_CHECKING:
    import onnx

PRECISION_KEY = "precision"
"""`metadata_props` key naming the precision of a variant (absent or `fp32` for the exported model)."""

CONVERSION_KEY = "facemask_sdk.conversion"
"""`metadata_props` key of a variant: the SHA-256 of what it was made from (the source model's bytes,
the precision, the converter's options and library versions). An existing variant whose key equals a
fresh one is up to date, without running the conversion again."""
CONVERTER_FORMAT = 1

__all__ = ["PRECISIONS", "PRECISION_KEY", "variant_path", "model_precision", "onnx_opset"]


def load_model(path: Path) -> onnx.ModelProto:
    """The ONNX model at `path`; `FileNotFoundError` / `ModelFileError` with the reason otherwise."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    try:
        return onnx.load(str(path))
    except (DecodeError, onnx.onnx_cpp2py_export.checker.ValidationError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a readable ONNX model: {exc}") from None


def conversion_key(source: Path, precision: str, options: Mapping[str, Any]) -> str:
    """The `CONVERSION_KEY` value of the `precision` variant of `source` made with `options`."""
    import onnx

    data = {
        "format": CONVERTER_FORMAT,
        "source_sha256": file_sha256(source),
        "precision": precision,
        "options": dict(options),
        "onnx": onnx.__version__,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def recorded_conversion_key(path: Path) -> str | None:
    """The conversion key an existing variant records (None: unreadable, or made without one)."""
    try:
        return metadata(load_model(path)).get(CONVERSION_KEY)
    except (FileNotFoundError, ModelFileError):
        return None


def onnx_opset(model: onnx.ModelProto) -> int:
    """The version of the default (`ai.onnx`) operator set the model imports (0 if none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in model.metadata_props}


def model_spec(model: onnx.ModelProto, path: Path) -> ModelSpec:
    """The `ModelSpec` stored in the model's metadata (needed to pre-process calibration images)."""
    return spec_from_metadata(metadata(model), path)


def model_precision(model: onnx.ModelProto) -> str:
    """`fp32`, `fp16` or `int8` as recorded in the metadata (models without the key are FP32)."""
    return metadata(model).get(PRECISION_KEY, "fp32")


def set_metadata(model: onnx.ModelProto, entries: dict[str, str]) -> None:
    """Replace the model's `metadata_props` by `entries` (kept in the given order)."""
    del model.metadata_props[:]
    for key, value in entries.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)


def check_output_path(out: Path, overwrite: bool, inputs: tuple[Path, ...] = ()) -> Path:
    """`FacemaskError` if `out` exists (without `overwrite`), is not an .onnx path or is an input."""
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise FacemaskError(f"the output must be an .onnx file, got {out}")
    if any(out.resolve() == Path(p).resolve() for p in inputs):
        raise FacemaskError(f"the output {out} is the input model; choose another path")
    if out.exists() and not out.is_file():
        raise FacemaskError(f"{out} exists and is not a file")
    if out.exists() and not overwrite:
        raise FacemaskError(f"{out} already exists; pass --force (overwrite=True) to replace it")
    return out
