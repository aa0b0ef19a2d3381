"""The precision measurement script (facemask_tools.build_engine.measure_precision): its sensitivity
groups name real layers of the shipped export, and a wrong group is refused before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")

from facemask_tools.build_engine.int8 import resolve_exclude  # noqa: E402
from facemask_tools.build_engine.measure_precision import SENSITIVITY_GROUPS, main  # noqa: E402

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


def test_unknown_group_is_refused_before_any_work(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(
            ["--onnx", str(tmp_path / "missing.onnx"), "--workdir", str(tmp_path / "work"), "--groups", "nothing,nope"]
        )
    assert exited.value.code == 2 and "unknown sensitivity group(s) 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
