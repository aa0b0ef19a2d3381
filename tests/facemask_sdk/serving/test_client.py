"""The gRPC client (facemask_sdk.serving.client) without a server: it says so within its timeout."""

from __future__ import annotations

import pytest

from facemask_tools.benchmarks.server_process import free_ports

pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc] (the [client] extra)")


def test_client_against_no_server_says_so_within_its_timeout(sample_images, error_of) -> None:
    from facemask_sdk.serving.client import TritonClient

    (closed,) = free_ports(1)
    with TritonClient(f"127.0.0.1:{closed}", timeout_s=3) as client:
        assert client.is_ready() is False
        message = error_of(lambda: client.detect(sample_images[0]))
    assert "does not answer (is it running?)" in message
    assert "timeout_s must be a number > 0" in error_of(lambda: TritonClient(timeout_s=0))
