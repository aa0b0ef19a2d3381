"""Engine sidecars: reading, validation and the TensorRT/GPU compatibility check (pure Python)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facemask_sdk.engine_meta import (
    check_compatible,
    read_sidecar,
    rebuild_command,
    sidecar_path,
    write_sidecar,
)
from facemask_sdk.errors import FacemaskError, ModelFileError
from facemask_sdk.spec import ModelSpec

SPEC = ModelSpec("tf_efficientdet_d0", (512, 512))


def sidecar(**changes) -> dict:
    data = {
        "spec": SPEC.to_dict(),
        "precision": "fp16",
        "tensorrt_version": "10.3.0",
        "gpu_name": "Orin",
        "compute_capability": "8.7",
        "onnx_sha256": "0" * 64,
        "onnx_path": "models/facemask.fp16.onnx",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_sidecar_path_appends_json() -> None:
    assert sidecar_path("models/model.fp16.engine") == Path("models/model.fp16.engine.json")


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    engine = tmp_path / "model.fp16.engine"
    written = write_sidecar(engine, sidecar(build_options={"workspace_gb": 2}))
    assert written == sidecar_path(engine)
    assert read_sidecar(engine) == json.loads(json.dumps(sidecar(build_options={"workspace_gb": 2})))
    assert ModelSpec.from_dict(read_sidecar(engine)["spec"]) == SPEC
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "content, error, words",
    [
        (None, ModelFileError, ["not found", "build-engine"]),
        ("{not json", ModelFileError, ["cannot read"]),
        ("[1, 2]", ModelFileError, ["JSON object", "list"]),
        (json.dumps(sidecar(precision=None)), ModelFileError, ["lacks precision", "build-engine"]),
        (json.dumps(sidecar(gpu_name=None, onnx_sha256=None)), ModelFileError, ["gpu_name, onnx_sha256"]),
        (json.dumps(sidecar(precision="bf16")), ModelFileError, ["fp32, fp16, int8", "bf16"]),
        (json.dumps(sidecar(tensorrt_version=10)), ModelFileError, ["tensorrt_version", "str", "int"]),
        (json.dumps(sidecar(spec={"format_version": 99})), ModelFileError, ["format_version 99"]),
        (json.dumps(sidecar(spec={**SPEC.to_dict(), "image_size": [500, 512]})), ModelFileError, ["multiples of 128"]),
        (json.dumps(sidecar(format_version=2)), ModelFileError, ["sidecar format 2", "reads format 1", "build-engine"]),
        (json.dumps(sidecar(format_version=1)), None, []),
        (json.dumps(sidecar()), None, []),
    ],
)
def test_read_sidecar(tmp_path: Path, content, error, words) -> None:
    engine = tmp_path / "m.engine"
    if content is not None:
        sidecar_path(engine).write_text(content)
    if error is None:
        assert read_sidecar(engine)["precision"] == "fp16"
        return
    with pytest.raises(error) as info:
        read_sidecar(engine)
    assert isinstance(info.value, FacemaskError)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    "changes, here, error, words",
    [
        ({}, ("10.3.0", "Orin", "8.7"), None, []),
        ({}, ("10.3.0.30", "orin ", "87"), None, []),  # build number, case/space, "87"
        ({"compute_capability": "sm_87"}, ("10.3.0", "Orin", "8.7"), None, []),
        ({}, ("10.7.0", "Orin", "8.7"), ModelFileError, ["TensorRT 10.3.0 (here: 10.7.0)"]),
        ({}, ("11.0.0", "Orin", "8.7"), ModelFileError, ["TensorRT 10.3.0"]),
        (
            {},
            ("10.3.0", "NVIDIA H100 80GB HBM3", "9.0"),
            ModelFileError,
            ["compute capability 8.7 (here: 9.0)", "GPU 'Orin' (here: 'NVIDIA H100 80GB HBM3')"],
        ),
        (
            {"gpu_name": "NVIDIA GeForce RTX 4090"},
            ("10.3.0", "NVIDIA GeForce RTX 4080", "8.9"),
            ModelFileError,
            ["GPU 'NVIDIA GeForce RTX 4090'"],
        ),
        ({}, ("10.4.0", "Xavier", "7.2"), ModelFileError, ["TensorRT 10.3.0", "compute capability", "GPU 'Orin'"]),
    ],
)
def test_check_compatible(changes, here, error, words) -> None:
    data = sidecar(**changes)
    if error is None:
        check_compatible(data, *here)
        return
    with pytest.raises(error) as info:
        check_compatible(data, *here, engine_path="models/model.fp16.engine")
    message = str(info.value)
    for word in words:
        assert word in message
    assert "rebuild it on this device" in message
    command = "facemask-sdk build-engine --onnx models/facemask.fp16.onnx --fp16 --out models/model.fp16.engine"
    assert f"`{command}`" in message


def test_rebuild_command_without_onnx_path() -> None:
    assert rebuild_command(sidecar(onnx_path=None, precision="int8")) == "facemask-sdk build-engine --int8"


def test_write_sidecar_refuses_incomplete_data(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="lacks spec"):
        write_sidecar(tmp_path / "m.engine", sidecar(spec=None))
    assert not sidecar_path(tmp_path / "m.engine").exists()
