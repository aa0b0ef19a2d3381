"""Shared fixtures: the CC0 sample images, and one tiny model exported once per test session.

`tiny_checkpoint` is a randomly initialised `tf_efficientdet_lite0` at 256 px (not trained: its
scores are around 0.01-0.1, so tests that compare detections use a low score threshold).
`tiny_onnx` is its ONNX export with metadata. Both need the training extras (torch, effdet, onnx);
without them the tests that use them are skipped.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
TINY_ARCHITECTURE = "tf_efficientdet_lite0"
TINY_IMAGE_SIZE = 256


@pytest.fixture(scope="session")
def sample_images() -> list[Path]:
    """The four sample images (all three classes among them), sorted by name."""
    paths = sorted((SAMPLES / "images").glob("*.png"))
    assert len(paths) == 4, f"expected 4 sample images under {SAMPLES / 'images'}, found {len(paths)}"
    return paths


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-init lite0 checkpoint at 256 px, saved like a training checkpoint."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("effdet")
    from facemask_tools.training.checkpoint import save_checkpoint
    from facemask_tools.training.model import create_network, make_spec

    torch.manual_seed(0)
    spec = make_spec(TINY_ARCHITECTURE, TINY_IMAGE_SIZE)
    network = create_network(spec).eval()
    payload = {
        "state_dict": network.state_dict(),
        "spec": spec.to_dict(),
        "epoch": 0,
        "metrics": {},
        "train_config": {},
        "init": "random (test)",
    }
    return save_checkpoint(tmp_path_factory.mktemp("checkpoint") / "tiny.pt", payload)


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint: Path, tmp_path_factory):
    """`ExportReport` of the tiny checkpoint exported once (static batch 1, parity on the samples)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxslim")
    pytest.importorskip("onnxruntime")
    from facemask_tools.build_engine.export import export_onnx

    return export_onnx(tiny_checkpoint, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_export) -> Path:
    """Path of the tiny exported ONNX model."""
    return tiny_export.path


@pytest.fixture(scope="session")
def run_cli():
    """`run_cli(args, cwd=ROOT, env=None)`: the real `facemask-sdk` command line in a subprocess."""

    def run(args: list, cwd: Path = ROOT, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "facemask_sdk.cli.main", *map(str, args)],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            timeout=timeout,
        )

    return run


@pytest.fixture
def error_of():
    """`error_of(call)`: the message of the `FacemaskError` that `call()` raises, or "" (for calls made on
    another thread, where `pytest.raises` cannot reach)."""
    from facemask_sdk.errors import FacemaskError

    def message(call) -> str:
        try:
            call()
        except FacemaskError as exc:
            return str(exc)
        return ""

    return message
