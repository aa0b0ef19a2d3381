"""facemask_tools/training/gpu_run.sh, the one script for a GPU machine, end to end on CPU: a compact copy of the data, a
time-boxed stint, weights and metrics in one folder, then a resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("effdet")

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


@pytest.mark.slow
def test_device_session_runs_a_stint_that_gpu_run_resumes_even_when_the_gpu_tests_cannot_start(tmp_path):
    """tests/gpu/device_session.sh, the one command for a lent GPU machine, on CPU with a tiny configuration: the
    GPU tests stop at their first need (pycuda, absent here and not in the wheel folder), the time-boxed stint of
    facemask_tools/training/gpu_run.sh still runs on a compact JPEG copy of the data, status.txt says which step
    gave what, and a later gpu_run.sh stint with RESUME=1 continues the same run. One stint serves both scripts:
    each start of the trainer costs seconds of the suite."""
    from facemask_tools.training.compact_data import compact

    if subprocess.run([sys.executable, "-c", "import pycuda.driver"], capture_output=True).returncode == 0:
        pytest.skip("pycuda is installed here: the GPU tests would run rather than stop at their first need")
    data = tmp_path / "compact"
    assert compact(SAMPLES, data) > 0 and len(list((data / "images").glob("*.jpg"))) == 4
    out, run_dir = tmp_path / "out", tmp_path / "run"
    env = {
        **os.environ,
        "OUT": str(out),
        "DATA": str(data),
        "WHEELS": str(tmp_path / "no-wheels"),
        "PRETRAINED": "none",
        "PYTHON": sys.executable,
        "RUN_DIR": str(run_dir),
    }
    tiny = ["--image-size", "128", "--batch-size", "2", "--max-steps", "1", "--epochs", "2", "--val-fraction", "0.25"]
    script = ROOT / "tests" / "gpu" / "device_session.sh"
    result = subprocess.run(
        ["bash", str(script), "1", *tiny, "--stop-after-steps", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "does not exist" in result.stderr
    assert (out / "status.txt").read_text().splitlines()[:2] == ["gpu-tests 3", "train 0"]
    train = out / "train"
    assert "available False" in (train / "device.txt").read_text()
    assert json.loads((train / "metrics.json").read_text())["step"] == 1 and (train / "best-weights.pt").is_file()
    # what a device call brings back: at most 8 files, none of the run's 40 MB checkpoints
    returned = [path for path in out.rglob("*") if path.is_file()]
    assert len(returned) <= 8 and (run_dir / "last.pt").is_file(), returned
    resumed = subprocess.run(
        ["bash", str(ROOT / "facemask_tools" / "training" / "gpu_run.sh"), str(data), "1"],
        capture_output=True,
        text=True,
        env={**env, "OUT": str(train), "RESUME": "1"},
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((train / "metrics.json").read_text())["step"] == 2
    weights = torch.load(train / "best-weights.pt", weights_only=True)
    assert "optimizer" not in weights and tuple(weights["spec"]["image_size"]) == (128, 128)
    # options where MINUTES belongs: refused at once, before the GPU tests spend the machine's time
    refused = subprocess.run(
        ["bash", str(script), "--epochs", "3"], capture_output=True, text=True, env=env, timeout=60
    )
    assert refused.returncode == 2 and refused.stderr.startswith("error: MINUTES must be a number, got '--epochs'")


def test_compact_data_quality_trades_bytes_for_fidelity(tmp_path):
    """--quality: a lower JPEG quality writes fewer bytes (what lets the data travel within a device call's 64 MiB)."""
    from facemask_tools.training.compact_data import compact

    assert compact(SAMPLES, tmp_path / "q50", quality=50) < compact(SAMPLES, tmp_path / "q92", quality=92)
