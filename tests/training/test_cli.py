"""The `eval` command line (facemask_tools.training.cli): it writes under runs/ by default, and a file that is
not a checkpoint is one error line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("effdet")

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
CLI = [sys.executable, "-m", "facemask_sdk.cli.main"]


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_eval_writes_under_runs_by_default(tmp_path, tiny_checkpoint):
    result = subprocess.run(CLI + ["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(SAMPLES)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "runs" / "eval" / f"{tiny_checkpoint.stem}-val" / "eval.json").is_file()
    assert not (tiny_checkpoint.parent / f"eval-{tiny_checkpoint.stem}-val").exists()
    assert "FutureWarning" not in result.stderr


def test_eval_rejects_a_file_that_is_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "model.pt"
    bogus.write_text("hello")
    result = run(["eval", "--checkpoint", str(bogus), "--data", str(SAMPLES)])
    assert result.returncode != 0 and "not a readable PyTorch checkpoint" in result.stderr and "Traceback" not in result.stderr
