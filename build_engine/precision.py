"""Precision variants of the exported model: FP16 and calibrated INT8 ONNX graphs for TensorRT.

TensorRT 11 builds only strongly typed networks (no `BuilderFlag.FP16`/`INT8`, no calibrators): the
precision is written into the ONNX graph, FP16 as FP16 tensors and INT8 as Q/DQ nodes. TensorRT 10
accepts the same graphs. This module holds what both converters share (reading the model and its
spec, hashing, metadata, atomic writes); the converters live in `facemask_tools.build_engine.fp16` and
`facemask_tools.build_engine.int8` and are re-exported here:

    >>> from facemask_tools.build_engine.precision import to_fp16, to_int8
    >>> to_fp16(Path("models/facemask.onnx"), Path("models/facemask.fp16.onnx"))
    >>> to_int8(Path("models/facemask.onnx"), Path("models/facemask.int8.onnx"), images, method="entropy")

Both keep the graph's inputs and outputs FP32 (`images`, `logits`, `boxes`), so every runtime feeds
and reads them exactly as the FP32 model, and both copy the model's `metadata_props` and add a
`precision` entry (`fp16` / `int8`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from facemask_sdk.errors import FacemaskError, ModelFileError
from facemask_sdk.spec import METADATA_KEY, ModelSpec

if TYPE_CHECKING:
    import onnx

PRECISIONS = ("fp32", "fp16", "int8")
PRECISION_KEY = "precision"
"""`metadata_props` key naming the precision of a variant (absent or `fp32` for the exported model)."""

__all__ = ["PRECISIONS", "PRECISION_KEY", "to_fp16", "to_int8", "variant_path", "model_precision"]


def to_fp16(*args, **kwargs):
    """See `facemask_tools.build_engine.fp16.to_fp16`."""
    from facemask_tools.build_engine.fp16 import to_fp16 as convert

    return convert(*args, **kwargs)


def to_int8(*args, **kwargs):
    """See `facemask_tools.build_engine.int8.to_int8`."""
    from facemask_tools.build_engine.int8 import to_int8 as convert

    return convert(*args, **kwargs)


def variant_path(onnx_path: Path, precision: str) -> Path:
    """`models/facemask.onnx` -> `models/facemask.fp16.onnx` (the default place of a variant)."""
    if precision not in PRECISIONS:
        raise FacemaskError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    onnx_path = Path(onnx_path)
    if precision == "fp32":
        return onnx_path
    return onnx_path.with_name(f"{onnx_path.stem}.{precision}{onnx_path.suffix}")


def load_model(path: Path) -> "onnx.ModelProto":
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


def metadata(model: "onnx.ModelProto") -> dict[str, str]:
    return {entry.key: entry.value for entry in model.metadata_props}


def model_spec(model: "onnx.ModelProto", path: Path) -> ModelSpec:
    """The `ModelSpec` stored in the model's metadata (needed to pre-process calibration images)."""
    text = metadata(model).get(METADATA_KEY)
    if text is None:
        raise ModelFileError(
            f"{path} has no facemask-sdk metadata ('{METADATA_KEY}'); export it with "
            f"`facemask-sdk export --checkpoint CKPT --out {Path(path).name}`"
        )
    return ModelSpec.from_json(text)


def model_precision(model: "onnx.ModelProto") -> str:
    """`fp32`, `fp16` or `int8` as recorded in the metadata (models without the key are FP32)."""
    return metadata(model).get(PRECISION_KEY, "fp32")


def set_metadata(model: "onnx.ModelProto", entries: dict[str, str]) -> None:
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
