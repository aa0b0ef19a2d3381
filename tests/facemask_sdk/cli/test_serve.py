"""`facemask-sdk serve` and `facemask-sdk triton-repository` (facemask_sdk.cli.serve) without a server: the
repository written or one error line, ports in use and bad settings refused in one line, the missing extra
named. Real servers: tests/system/test_triton_server.py."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest

from facemask_tools.benchmarks.server_process import free_ports

ROOT = Path(__file__).resolve().parents[3]
SHIPPED_STATIC_ONNX = ROOT / "models" / "facemask.onnx"


def test_cli_writes_the_repository_or_one_error_line(run_cli, tiny_dynamic_onnx, tmp_path) -> None:
    result = run_cli(
        ["triton-repository", "--onnx", tiny_dynamic_onnx, "--out", tmp_path / "gpu", "--backend", "tensorrt"]
    )
    assert result.returncode == 0, result.stderr
    assert "facemask-sdk build-engine --onnx" in result.stdout and "--dynamic-batch 1,4,8" in result.stdout
    assert "with the close-up check" in result.stdout
    result = run_cli(
        ["triton-repository", "--onnx", tiny_dynamic_onnx, "--out", tmp_path / "cpu", "--no-closeup-check"]
    )
    assert result.returncode == 0 and "no close-up check" in result.stdout, result.stderr
    assert '"check": null' in (tmp_path / "cpu" / "facemask_postprocess" / "1" / "closeup_check.json").read_text()
    for args, expected in [
        (["--onnx", SHIPPED_STATIC_ONNX, "--out", tmp_path / "a"], "fixed batch of 1"),
        (["--onnx", tmp_path / "none.onnx", "--out", tmp_path / "b"], "ONNX model not found"),
        (["--onnx", tiny_dynamic_onnx, "--out", tmp_path / "gpu"], "exists; choose another folder"),
    ]:
        result = run_cli(["triton-repository", *args])
        assert result.returncode == 2 and result.stderr.startswith("error: ") and expected in result.stderr, (
            result.stderr
        )
        assert "Traceback" not in result.stderr


def test_serve_refuses_a_port_in_use_and_bad_settings_in_one_line(run_cli, tmp_path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        (free,) = free_ports(1)
        for args, expected in [
            (["--grpc-port", str(port), "--http-port", str(free)], f"cannot listen on 127.0.0.1:{port} for gRPC"),
            (["--http-port", "9000", "--grpc-port", "9000"], "ports must differ"),
            (["--score-threshold", "2"], "score_threshold"),
            (["--model", tmp_path / "none.onnx"], "model file not found"),
        ]:
            result = run_cli(["serve", *args])
            assert result.returncode == 2 and result.stderr.startswith("error: ") and expected in result.stderr, (
                result.stderr
            )


def test_serve_without_pytriton_names_the_extra(run_cli) -> None:
    if importlib.util.find_spec("pytriton") is not None:
        pytest.skip("nvidia-pytriton is installed in this environment (test_triton_server.py runs it)")
    http_port, grpc_port = free_ports(2)
    result = run_cli(["serve", "--http-port", str(http_port), "--grpc-port", str(grpc_port)])
    assert result.returncode == 2
    assert "pip install 'facemask-sdk[serve]'" in result.stderr and result.stderr.startswith("error: ")
