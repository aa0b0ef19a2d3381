"""A server that fails to start (facemask_tools.benchmarks.server_process) says why: tritonserver writes
the cause of "failed to load all models" far above the end of its log."""

from __future__ import annotations

import sys

import pytest

from facemask_tools.benchmarks.server_process import ServerProcess, free_ports


def test_a_server_that_dies_while_starting_shows_the_cause_from_far_up_its_log(tmp_path) -> None:
    script = (
        "print('I1206 starting the server')\n"
        "print('E1206 14:00:00.000 1 model_lifecycle.cc:654] failed to load facemask_preprocess: "
        "ModuleNotFoundError: No module named cv2')\n"
        "for i in range(2000):\n    print(f'I1206 unrelated line {i}')\n"
        "print('error: creating server: Internal - failed to load all models')\n"
        "raise SystemExit(1)\n"
    )
    http_port, grpc_port = free_ports(2)
    server = ServerProcess([sys.executable, "-c", script], tmp_path / "server.log", http_port, grpc_port)
    with pytest.raises(RuntimeError) as failure:
        server.wait_ready(timeout_s=60)
    server.stop()
    message = str(failure.value)
    assert message.startswith("the server exited with 1 while starting")
    assert "No module named cv2" in message and "failed to load all models" in message
    assert "unrelated line 10\n" not in message, "the middle of the log is left out"
