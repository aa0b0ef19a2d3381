"""Model building: checkpoint -> ONNX with its metadata (and, in later steps, precision variants and
TensorRT engines). The export needs the `[export]` extras (torch, effdet, onnx, onnxslim,
onnxruntime); they are imported only when used, and the runtime package `facemask_sdk` never
imports this package.

    >>> from facemask_tools.build_engine import export_onnx
    >>> report = export_onnx(Path("runs/train/best.pt"), Path("models/facemask.onnx"))
    >>> report.max_abs_diff_logits
"""

from __future__ import annotations

import importlib

_LAZY = {
    "export_onnx": "facemask_tools.build_engine.export",
    "ExportReport": "facemask_tools.build_engine.export",
    "to_fp16": "facemask_tools.build_engine.fp16",
    "to_int8": "facemask_tools.build_engine.int8",
    "build_engine": "facemask_tools.build_engine.tensorrt_build",
    "BuildOptions": "facemask_tools.build_engine.tensorrt_build",
    "BatchProfile": "facemask_tools.build_engine.tensorrt_build",
    "build": "facemask_tools.build_engine.builder",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
