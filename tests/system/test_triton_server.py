"""Real Triton servers on 127.0.0.1, answering like the in-process `Detector`.

The servers run from the serving environment (`facemask_tools.benchmarks.serve_env`: the wheel built
from the tracked files plus its `[serve]` extra, because PyTriton needs numpy < 2 and this suite's
environment has numpy 2). Each server is started on free ports, waited for on its model's ready
endpoint and stopped by its PID with SIGTERM, which must end it cleanly (exit code 0).
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemask_sdk import Detector
from facemask_sdk.errors import FacemaskError

pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc] (the [client] extra)")
from facemask_sdk.serving.client import TritonClient  # noqa: E402
from facemask_sdk.serving.repository import NETWORK, RepositoryOptions, write_repository  # noqa: E402
from facemask_tools.benchmarks.serve_env import serve_environment  # noqa: E402
from facemask_tools.benchmarks.server_process import (  # noqa: E402
    ServerProcess,
    bundled_server_argv,
    free_ports,
    serve_argv,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def serve_python(wheel: Path) -> Path:
    """The Python of the serving environment, with this session's wheel installed."""
    try:
        return serve_environment(wheel)
    except RuntimeError as exc:
        if "No matching distribution" in str(exc) or "Could not find a version" in str(exc):
            pytest.skip(f"the [serve] extra cannot be installed here (no package index has nvidia-pytriton): {exc}")
        raise


@pytest.fixture(scope="session")
def detector(shipped_dynamic_onnx: Path):
    with Detector(shipped_dynamic_onnx) as in_process:
        yield in_process


def _started(server: ServerProcess) -> ServerProcess:
    try:
        server.wait_ready()
    except RuntimeError as exc:
        server.stop()
        pytest.fail(str(exc))
    return server


def _shared_memory_of(pid: int) -> dict[str, int]:
    """{path: mode} of the /dev/shm files that the process `pid` and its descendants have mapped."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grown = {pid}, True
    while grown:
        children = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= children
        grown = bool(children)
    mapped = {}
    for member in tree:
        try:
            lines = Path(f"/proc/{member}/maps").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            path = line.split(maxsplit=5)[5] if len(line.split(maxsplit=5)) == 6 else ""
            if path.startswith("/dev/shm/") and Path(path).exists():
                mapped[path] = Path(path).stat().st_mode & 0o777
    return mapped


def _assert_same(served, local, where: str) -> None:
    assert len(served) == len(local), f"{where}: {len(served)} served vs {len(local)} in-process"
    np.testing.assert_array_equal(served.class_ids, local.class_ids, err_msg=where)
    np.testing.assert_allclose(served.xyxy, local.xyxy, atol=1e-3, err_msg=where)
    np.testing.assert_allclose(served.scores, local.scores, atol=1e-5, err_msg=where)


def _batching_since(
    batching, images_before: int, runs_before: int, at_least: int, timeout_s: float = 10.0
) -> tuple[int, int]:
    """(images, runs) the server has counted since the `before` figures. Triton updates its statistics
    after the responses are sent, so a read right after the last answer can miss the last runs: poll
    until all `at_least` images are counted (or the timeout, and the caller's assertion says what was)."""
    deadline = time.monotonic() + timeout_s
    while True:
        images, runs = batching()
        images, runs = images - images_before, runs - runs_before
        if images >= at_least or time.monotonic() > deadline:
            return images, runs
        time.sleep(0.1)


def _exercise(client: TritonClient, detector, sample_images: list[Path], batching, closeup_frame: np.ndarray) -> None:
    """Each sample alone, all in one request (and in requests of 3), and from 4 threads at once: all
    equal to `Detector`; the 4 threads' single-image requests must have been batched by the server. A
    close-up gets the class of the `Detector`'s close-up check, not the network's own."""
    local = [detector(path) for path in sample_images]
    assert sum(len(d) for d in local) > 0, "the samples must have faces for the comparison to mean anything"
    closeup = detector(closeup_frame)
    assert detector.last_timing["closeup_checks"] == 1
    _assert_same(client.detect(cv2.imencode(".png", closeup_frame)[1].tobytes()), closeup, "a close-up")
    for path, expected in zip(sample_images, local):
        _assert_same(client.detect(path), expected, path.name)
    for path, served, expected in zip(sample_images, client.detect_batch(sample_images), local):
        _assert_same(served, expected, f"{path.name} in a batch")
    client.max_batch_size = 3
    for path, served, expected in zip(sample_images, client.detect_batch(sample_images), local):
        _assert_same(served, expected, f"{path.name} in requests of 3")
    work = [i % len(sample_images) for i in range(16)]
    images_before, runs_before = batching()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: client.detect(sample_images[i]), work))
    images, runs = _batching_since(batching, images_before, runs_before, at_least=len(work))
    # statistics may count the previous request late (one more image and run): fewer runs than the 16
    # single-image requests still means that the batcher grouped some
    assert images >= len(work) and runs < len(work), (
        f"the dynamic batcher never batched: {images} images in {runs} runs"
    )
    for i, served in zip(work, answers):
        _assert_same(served, local[i], f"{sample_images[i].name} from 4 threads")
    with pytest.raises(FacemaskError, match="cannot decode image"):
        client.detect(b"these bytes are no image")
    _assert_same(client.detect(sample_images[0]), local[0], "after a bad request")
    _one_bad_client_among_seven(client, sample_images, local)


def _one_bad_client_among_seven(client: TritonClient, sample_images: list[Path], local: list) -> None:
    """Seven clients at once, one of them sending garbage: the batcher mixes their requests, and every
    good request must still be answered right; the bad one gets one line, no server traceback."""

    def good_client(worker: int) -> list:
        return [client.detect(sample_images[(worker + i) % len(sample_images)]) for i in range(6)]

    def bad_client() -> list[str]:
        refusals = []
        for _ in range(6):
            try:
                client.detect(b"these bytes are no image")
            except FacemaskError as exc:
                refusals.append(str(exc))
        return refusals

    with ThreadPoolExecutor(7) as pool:
        bad = pool.submit(bad_client)
        good = [pool.submit(good_client, worker) for worker in range(6)]
        answers = [future.result() for future in good]  # a failed good request raises here
        refusals = bad.result()
    for worker, served in enumerate(answers):
        for i, found in enumerate(served):
            index = (worker + i) % len(sample_images)
            _assert_same(found, local[index], f"{sample_images[index].name}, good client {worker} beside a bad one")
    assert len(refusals) == 6, "every bad request must be refused"
    for message in refusals:
        assert "cannot decode image" in message and "\n" not in message and "Traceback" not in message, message


def test_tritonserver_serves_the_generated_repository_like_detector(
    serve_python, shipped_dynamic_onnx, detector, sample_images, closeup_frame, tmp_path
) -> None:
    repository = write_repository(
        tmp_path / "repository", shipped_dynamic_onnx, RepositoryOptions(backend="python", network_threads=2)
    ).path
    http_port, grpc_port = free_ports(2)
    server = _started(
        ServerProcess(
            bundled_server_argv(serve_python, repository, tmp_path, http_port, grpc_port),
            tmp_path / "tritonserver.log",
            http_port,
            grpc_port,
        )
    )
    try:
        with TritonClient(f"127.0.0.1:{grpc_port}", timeout_s=120) as client:
            assert client.is_ready()
            _exercise(client, detector, sample_images, lambda: client.batching(NETWORK), closeup_frame)
    finally:
        code = server.stop()
    assert code == 0, server.log()


def test_serve_command_answers_like_detector_and_stops_on_sigterm(
    serve_python, shipped_dynamic_onnx, detector, sample_images, closeup_frame, tmp_path
) -> None:
    http_port, grpc_port = free_ports(2)
    argv = serve_argv(
        serve_python, shipped_dynamic_onnx, http_port, grpc_port, "--threads", "2", "--access-token", "test-token"
    )  # the wheel's own `facemask-sdk` entry point
    server = _started(ServerProcess(argv, tmp_path / "serve.log", http_port, grpc_port))
    try:
        with TritonClient(f"127.0.0.1:{grpc_port}", timeout_s=120, access_token="test-token") as client:
            _exercise(client, detector, sample_images, client.batching, closeup_frame)
            shared_memory = _shared_memory_of(server.pid)
    finally:
        code = server.stop()
    log = server.log(tail=10**7)
    assert code == 0, log[-4000:]
    assert shared_memory, "the server passed no request through /dev/shm: the check below would mean nothing"
    assert not {path: oct(mode) for path, mode in shared_memory.items() if mode & 0o077}, (
        "request images in shared memory must be readable by the server's user only"
    )
    assert "serving model 'facemask'" in log and log.rstrip().endswith("stopped"), log[-4000:]
    with socket.socket() as probe:  # the ports are free again: nothing was left running
        probe.bind(("127.0.0.1", grpc_port))
