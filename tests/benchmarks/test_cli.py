"""`facemask-sdk bench` (facemask_tools.benchmarks.cli): bad options are errors, and an earlier run is kept
without --force."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "samples"  # a small VOC folder: images/ + annotations/


@pytest.mark.parametrize(
    "args, message",
    [
        (["--runners", "nope"], "unknown runner"),
        (["--images", "0"], "--images"),
        (["--data", "does/not/exist"], "not a folder"),
    ],
)
def test_cli_errors(tmp_path, run_cli, args, message):
    done = run_cli(["bench", "--data", SAMPLES, "--split", "all", "--out", tmp_path / "out", "--no-progress", *args])
    assert done.returncode != 0
    assert message in done.stderr + done.stdout


def test_refuses_to_overwrite_without_force(tmp_path, run_cli):
    (tmp_path / "bench.json").write_text("{}")
    done = run_cli(["bench", "--data", SAMPLES, "--out", tmp_path])
    assert done.returncode != 0 and "--force" in done.stderr
    assert (tmp_path / "bench.json").read_text() == "{}"


def test_input_sizes_multiply_the_cpu_runners_and_bad_sizes_are_refused(run_cli, tmp_path) -> None:
    from facemask_tools.benchmarks.runners import discover_runners

    names = [r.name for r in discover_runners(tmp_path / "m.onnx", tmp_path / "m.pt", None, (512, 640))]
    assert names[:4] == ["pytorch-cpu-fp32", "ort-cpu-fp32-512", "ort-cpu-fp16-512", "ort-cpu-int8-512"]
    assert "ort-cpu-fp32-640" in names and "ort-cpu-fp32" not in names and "trt-fp16" in names
    result = run_cli(["bench", "--input-size", "512,600", "--list-runners"])
    assert result.returncode == 2 and "multiples of 128" in result.stderr
