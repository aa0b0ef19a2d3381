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
