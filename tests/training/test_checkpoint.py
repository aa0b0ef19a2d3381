"""Checkpoints load with weights_only: a pickle that runs code is refused before any of it runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("effdet")

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "facemask_sdk.cli.main"]


class _RunsCode:
    """Unpickling this calls `Path.touch(marker)`: the stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture()
def evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "spec": {}, "payload": _RunsCode(marker)}, path)
    assert not marker.exists()
    return path, marker


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "--checkpoint", "{ckpt}", "--data", "samples", "--out", "{tmp}/eval"],
        ["export", "--checkpoint", "{ckpt}", "--out", "{tmp}/model.onnx"],
        ["train", "--data", "samples", "--out", "{tmp}/run", "--pretrained", "{ckpt}", "--image-size", "128"],
        ["train", "--out", "{tmp}/run", "--resume", "{ckpt}"],
    ],
    ids=["eval", "export", "train-pretrained", "train-resume"],
)
def test_code_running_pickle_runs_nothing(evil_checkpoint, tmp_path, command):
    path, marker = evil_checkpoint
    args = [a.format(ckpt=path, tmp=tmp_path) for a in command]
    result = subprocess.run(CLI + args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode != 0
    assert not marker.exists(), "unpickling ran code"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "could run code" in lines[0], result.stderr


def test_own_checkpoints_load_with_weights_only(tiny_checkpoint):
    from facemask_tools.training.checkpoint import load_network

    network, spec, payload = load_network(tiny_checkpoint)
    assert spec.architecture and isinstance(payload["train_config"], dict)
