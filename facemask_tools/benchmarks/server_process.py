"""A Triton server process started on 127.0.0.1 and stopped by its PID: one lifecycle for the serving
tests and the load benchmark."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from facemask_sdk.serving.protocol import MODEL_NAME


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports that nothing listens on at 127.0.0.1 right now."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def bundled_server_argv(python: Path, repository: Path, workdir: Path, http_port: int, grpc_port: int) -> list[str]:
    """PyTriton's tritonserver on a generated repository (the process becomes tritonserver)."""
    return [
        str(python),
        "-m",
        "facemask_sdk.serving.bundled_server",
        str(repository),
        str(workdir),
        "127.0.0.1",
        str(http_port),
        str(grpc_port),
    ]


def serve_argv(python: Path, model: Path, http_port: int, grpc_port: int, *extra: str) -> list[str]:
    """`facemask-sdk serve` of the environment that `python` belongs to."""
    return [
        str(Path(python).parent / "facemask-sdk"),
        "serve",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        *extra,
    ]


_ERROR_LINE = re.compile(r"^(E\d{4} |\w*(Error|Exception)\b|.*\b(error|Error):)")


class ServerProcess:
    """A server started from `argv` with its output in `log`; `wait_ready()` polls the model's ready
    endpoint (the server itself is up before its model), `stop()` sends SIGTERM to the PID."""

    def __init__(self, argv: list[str], log: Path, http_port: int, grpc_port: int, env: dict | None = None) -> None:
        self.log_path, self.http_port, self.grpc_port = Path(log), http_port, grpc_port
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=self.log_path.parent
        )
        self.pid = self.process.pid

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def wait_ready(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.http_port}/v2/models/{MODEL_NAME}/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode} while starting:\n{self.why()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the server was not ready within {timeout_s:.0f} s:\n{self.why()}")

    def why(self, tail: int = 3000) -> str:
        """The log's error lines first (tritonserver's own `E...` lines and Python exceptions, where the
        cause of "failed to load all models" sits, often far above its end), then the log's end."""
        text = self.log(tail=10**7)
        found = "\n".join([line for line in text.splitlines() if _ERROR_LINE.match(line)][-30:])
        return (f"error lines of the log:\n{found}\n\nthe log's end:\n" if found else "") + text[-tail:]

    def log(self, tail: int = 4000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-tail:]

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM, then SIGKILL if it has not ended within `timeout_s` (reported as -9)."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        if exc_info[0] is not None:
            print(self.log(), file=sys.stderr)
