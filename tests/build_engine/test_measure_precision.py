"""The precision measurement (`facemask-sdk dev measure-precision`, facemask_tools.build_engine.measure_precision):
its sensitivity groups name real layers of the shipped export, and a wrong group is refused before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")

from facemask_tools.build_engine.int8 import resolve_exclude  # noqa: E402
from facemask_tools.build_engine.measure_precision import SENSITIVITY_GROUPS  # noqa: E402
from facemask_tools.dev import dev  # noqa: E402

SHIPPED_ONNX = Path(__file__).resolve().parents[2] / "models" / "facemask.onnx"


@pytest.mark.skipif(not SHIPPED_ONNX.is_file(), reason="models/facemask.onnx is not in this checkout")
def test_groups_name_layers_of_the_shipped_export():
    model = onnx.load(str(SHIPPED_ONNX))
    sizes = {group: len(resolve_exclude(model, entries)) for group, entries in SENSITIVITY_GROUPS.items() if entries}
    sizes["nothing"] = len(SENSITIVITY_GROUPS["nothing"])
    assert sizes["nothing"] == 0 and sizes["stem (first conv)"] == 1 and sizes["backbone"] == 48
    early = [
        sizes[g]
        for g in (
            "stem (first conv)",
            "stem + backbone stage 1",
            "stem + backbone stages 1-2",
            "stem + backbone stages 1-3",
        )
    ]
    assert early == sorted(early) and len(set(early)) == 4, early  # each adds a stage
    assert all(sizes[g] > 0 for g in SENSITIVITY_GROUPS if g != "nothing"), sizes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--groups", "nothing,nope"], "unknown sensitivity group(s) 'nope'"),
        (["--methods", "minmax,median"], "unknown calibration method(s) 'median'"),
        (["--skip", "fp32"], "unknown row(s) 'fp32'"),
        (["--checkpoint", "runs/x.pt"], "give exactly one of --checkpoint"),
    ],
)
def test_bad_options_are_refused_before_any_work(tmp_path: Path, args, message):
    work = tmp_path / "work"
    result = CliRunner().invoke(
        dev, ["measure-precision", "--onnx", str(tmp_path / "missing.onnx"), "--workdir", str(work), *args]
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert not work.exists()
