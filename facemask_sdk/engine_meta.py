"""The JSON sidecar beside every TensorRT engine, and the check that an engine fits this machine.

A serialized engine runs only on the GPU model and the TensorRT version it was built with, and it
carries none of our model settings. So `facemask-sdk build-engine` writes `<engine>.json` beside
`<engine>` (e.g. `model.fp16.engine.json`), and the runtime reads it back before loading the engine:

    {"spec": {...ModelSpec.to_dict()...}, "precision": "fp16", "tensorrt_version": "10.3.0",
     "gpu_name": "Orin", "compute_capability": "8.7", "onnx_sha256": "ab12...", ...}

Extra keys (build options, the ONNX path, timings) are kept as they are. Pure Python: no TensorRT here.

    >>> check_compatible(read_sidecar("model.fp16.engine"), trt.__version__, "Orin", "8.7")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from facemask_sdk.errors import ModelFileError
from facemask_sdk.files import write_atomically
from facemask_sdk.models import PRECISIONS
from facemask_sdk.spec import ModelSpec

SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = 1
"""Version of the sidecar's layout; a sidecar of another version is refused with the rebuild command."""
REQUIRED_KEYS: dict[str, type] = {
    "spec": dict,
    "precision": str,
    "tensorrt_version": str,
    "gpu_name": str,
    "compute_capability": str,
    "onnx_sha256": str,
}


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """`model.fp16.engine` -> `model.fp16.engine.json`."""
    return Path(f"{os.fspath(engine_path)}{SIDECAR_SUFFIX}")


def validate_sidecar(sidecar: object, source: str = "engine sidecar") -> dict:
    """The sidecar as a dict if it has every required key with the right type and a readable spec."""
    if not isinstance(sidecar, dict):
        raise ModelFileError(f"{source} must hold a JSON object, found {type(sidecar).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in sidecar]
    if missing:
        raise ModelFileError(
            f"{source} lacks {', '.join(missing)}; rebuild the engine with `facemask-sdk build-engine`"
        )
    version = sidecar.get("format_version", SIDECAR_FORMAT)  # sidecars before the key existed are version 1
    if version != SIDECAR_FORMAT:
        raise ModelFileError(
            f"{source} has sidecar format {version!r}, this facemask-sdk reads format {SIDECAR_FORMAT}; "
            "rebuild the engine with `facemask-sdk build-engine`"
        )
    for key, kind in REQUIRED_KEYS.items():
        if not isinstance(sidecar[key], kind):
            raise ModelFileError(f"{source}: {key!r} must be a {kind.__name__}, found {type(sidecar[key]).__name__}")
    if sidecar["precision"] not in PRECISIONS:
        raise ModelFileError(
            f"{source}: precision must be one of {', '.join(PRECISIONS)}, found {sidecar['precision']!r}"
        )
    ModelSpec.from_dict(sidecar["spec"])  # raises ModelFileError naming the problem
    return sidecar


def read_sidecar(engine_path: str | os.PathLike) -> dict:
    """Read and validate the sidecar of an engine; `ModelFileError` if it is missing or malformed."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise ModelFileError(
            f"{path} not found: an engine needs the sidecar that `facemask-sdk build-engine` writes beside it; "
            f"rebuild the engine on this device"
        )
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"cannot read the engine sidecar {path}: {exc}") from None
    return validate_sidecar(sidecar, source=str(path))


def write_sidecar(engine_path: str | os.PathLike, sidecar: Mapping[str, Any]) -> Path:
    """Validate and write `<engine>.json` atomically (temporary file, then rename); returns its path."""
    data = validate_sidecar(dict(sidecar), source="engine sidecar")
    return write_atomically(sidecar_path(engine_path), json.dumps(data, indent=2, sort_keys=True) + "\n")


def build_command(
    onnx: str | None,
    precision: str | None,
    batch: tuple[int, int, int] | None = None,
    workspace_gb: float | None = None,
    out: str | None = None,
    input_size: int | None = None,
) -> str:
    """`facemask-sdk build-engine ...` for these options: the one place the command is spelled, used by
    the runtime's rebuild advice and the builder's "run this on the device" line."""
    parts = ["facemask-sdk", "build-engine"]
    if onnx:
        parts += ["--onnx", onnx]
    if precision in PRECISIONS:
        parts.append(f"--{precision}")
    if batch is not None:
        low, opt, high = batch
        parts += ["--batch", str(low)] if low == high else ["--dynamic-batch", f"{low},{opt},{high}"]
    if input_size is not None:
        parts += ["--input-size", str(input_size)]
    if workspace_gb is not None:
        parts += ["--workspace-gb", f"{workspace_gb:g}"]
    if out:
        parts += ["--out", out]
    return " ".join(parts)


def rebuild_command(sidecar: Mapping[str, Any], engine_path: str | os.PathLike | None = None) -> str:
    """The command that rebuilds this engine for the machine it runs on (same ONNX, precision, batch)."""
    options = sidecar.get("build_options") or {}
    onnx = sidecar.get("onnx_path") or options.get("onnx")
    recorded = options.get("batch")
    batch = None
    if isinstance(recorded, Mapping) and all(isinstance(recorded.get(k), int) for k in ("min", "opt", "max")):
        batch = (recorded["min"], recorded["opt"], recorded["max"])
    size = options.get("input_size")
    return build_command(
        onnx if isinstance(onnx, str) else None,
        sidecar.get("precision"),
        batch,
        out=None if engine_path is None else os.fspath(engine_path),
        input_size=size if isinstance(size, int) else None,
    )


def check_compatible(
    sidecar: Mapping[str, Any],
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
    engine_path: str | os.PathLike | None = None,
) -> None:
    """Refuse an engine built for another TensorRT version (major.minor.patch), GPU model or compute
    capability, with one message that lists every mismatch and the command that rebuilds it."""
    found = []
    if _version(sidecar["tensorrt_version"]) != _version(trt_version):
        found.append(f"TensorRT {sidecar['tensorrt_version']} (here: {trt_version})")
    if _capability(sidecar["compute_capability"]) != _capability(compute_capability):
        found.append(f"compute capability {sidecar['compute_capability']} (here: {compute_capability})")
    if _name(sidecar["gpu_name"]) != _name(gpu_name):
        found.append(f"GPU {sidecar['gpu_name']!r} (here: {gpu_name!r})")
    if found:
        what = f"engine {os.fspath(engine_path)}" if engine_path is not None else "this engine"
        raise ModelFileError(
            f"{what} was built for {'; '.join(found)}. TensorRT engines only run on the GPU model and "
            f"TensorRT version they were built with: rebuild it on this device with "
            f"`{rebuild_command(sidecar, engine_path)}`"
        )


def _version(text: str) -> tuple[int, ...]:
    numbers = [int(n) for n in re.findall(r"\d+", str(text))[:3]]
    return tuple(numbers + [0] * (3 - len(numbers)))


def _capability(text: str) -> str:
    value = str(text).strip().lower().removeprefix("sm_").removeprefix("compute_")
    if re.fullmatch(r"\d{2,3}", value):  # "87" -> "8.7"
        value = f"{value[:-1]}.{value[-1]}"
    return value


def _name(text: str) -> str:
    return " ".join(str(text).split()).casefold()
