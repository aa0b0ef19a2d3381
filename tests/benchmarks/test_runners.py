"""Benchmark runners (facemask_tools.benchmarks.runners): discovery names every variant and why one cannot run."""

from __future__ import annotations

import numpy as np
import pytest

from facemask_sdk.errors import FacemaskError
from facemask_tools.benchmarks.runners import BASELINE, RunnerSpec, discover_runners, make_runner, variant_path


def test_discovery_names_variants_and_reasons(tmp_path):
    model = tmp_path / "facemask.onnx"
    runners = {r.name: r for r in discover_runners(model, tmp_path / "facemask.pt")}
    assert list(runners)[0] == BASELINE and runners[BASELINE].spec.baseline
    assert runners["ort-cpu-int8"].spec.path == str(variant_path(model, "int8")) == str(tmp_path / "facemask.int8.onnx")
    ok, reason = runners["ort-cpu-fp32"].available()
    assert not ok and "facemask.onnx" in reason
    with pytest.raises(FacemaskError, match="unknown backend"):
        make_runner(RunnerSpec("x", "tflite", "fp32", "cpu", "m.tflite"))
    assert runners["ov-cpu-auto"].spec.path == str(model) and not runners["ov-cpu-auto"].available()[0]
    with pytest.raises(FacemaskError, match=r"bench runner ort-cpu-fp32 is closed; call open\(\)"):
        runners["ort-cpu-fp32"](np.zeros((8, 8, 3), np.uint8))
