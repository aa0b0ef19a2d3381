"""Where the shipped model is: `Detector()` without a model path uses `default_model_path()`.

Installed from a wheel, the shipped ONNX models are package data (`facemask_sdk/shipped/`); in a
checkout (editable install) they are the repository's `models/` folder. `$FACEMASK_SDK_MODEL` wins
over both, so a container or a Jetson application points the SDK at its own model or engine.
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_ENV_VAR = "FACEMASK_SDK_MODEL"
"""Environment variable naming the default model file (it wins over the shipped model)."""

SHIPPED_NAME = "facemask.onnx"

PRECISIONS = ("fp32", "fp16", "int8")
"""The precision variants of a model; each lives beside the FP32 export under one naming rule."""
_PACKAGE_DIR = Path(__file__).resolve().parent


def shipped_model_dir() -> Path:
    """The folder of the shipped models: package data when installed, else `<checkout>/models`."""
    installed = _PACKAGE_DIR / "shipped"
    if (installed / SHIPPED_NAME).is_file():
        return installed
    checkout = _PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file():  # a checkout, not some other project's site-packages/models
        return checkout / "models"
    return installed


def shipped_model_path() -> Path:
    """The shipped FP32 ONNX model (it may be missing in a checkout that deleted it)."""
    return shipped_model_dir() / SHIPPED_NAME


def default_model_path() -> Path:
    """`$FACEMASK_SDK_MODEL` if set, else the shipped model; `FileNotFoundError` if missing."""
    from_env = os.environ.get(MODEL_ENV_VAR)
    if from_env:
        path = Path(from_env).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{MODEL_ENV_VAR} points to {path}, which is not a file")
        return path
    shipped = shipped_model_path()
    if not shipped.is_file():
        raise FileNotFoundError(
            f"no model given and the shipped model {shipped} is missing. Pass a model path, set "
            f"{MODEL_ENV_VAR}, or produce one: `facemask-sdk train ...` then "
            f"`facemask-sdk export --checkpoint runs/train/expN/best.pt --out {shipped}`"
        )
    return shipped


def variant_path(model: str | os.PathLike, precision: str, suffix: str | None = None) -> Path:
    """Where a precision variant of `model` lives: `facemask.onnx` -> `facemask.fp16.onnx`; with
    `suffix=".engine"` its TensorRT engine: `facemask.engine` (FP32), `facemask.fp16.engine`, ..."""
    if precision not in PRECISIONS:
        from facemask_sdk.errors import FacemaskError

        raise FacemaskError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    model = Path(model)
    suffix = model.suffix if suffix is None else suffix
    return model.with_name(model.stem + ("" if precision == "fp32" else f".{precision}") + suffix)
