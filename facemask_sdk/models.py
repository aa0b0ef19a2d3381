"""Where the shipped model is: `Detector()` without a model path uses `default_model_path()`."""

from __future__ import annotations

import os
from pathlib import Path

MODEL_ENV_VAR = "FACEMASK_SDK_MODEL"
"""Environment variable naming the default model file (it wins over the shipped model)."""

SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "models" / "facemask.onnx"
"""The model that ships with the repository."""


def default_model_path() -> Path:
    """`$FACEMASK_SDK_MODEL` if set, else `<repository>/models/facemask.onnx`; `FileNotFoundError` if missing."""
    from_env = os.environ.get(MODEL_ENV_VAR)
    if from_env:
        path = Path(from_env).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{MODEL_ENV_VAR} points to {path}, which is not a file")
        return path
    if not SHIPPED_MODEL.is_file():
        raise FileNotFoundError(
            f"no model given and the shipped model {SHIPPED_MODEL} is missing. Pass a model path, set "
            f"{MODEL_ENV_VAR}, or produce one: `facemask-sdk train ...` then "
            f"`facemask-sdk export --checkpoint runs/train/expN/best.pt --out {SHIPPED_MODEL}`"
        )
    return SHIPPED_MODEL
