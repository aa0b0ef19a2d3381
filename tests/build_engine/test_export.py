"""Checkpoint -> ONNX (facemask_tools.build_engine.export): parity with PyTorch, metadata, graph interface, checker,
overwrite protection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")

from facemask_sdk.anchors import generate_anchors  # noqa: E402
from facemask_sdk.errors import FacemaskError  # noqa: E402
from facemask_sdk.spec import METADATA_KEY, ModelSpec  # noqa: E402
from facemask_tools.build_engine.export import export_onnx  # noqa: E402


def test_parity_with_pytorch_on_the_samples(tiny_export, sample_images: list[Path]) -> None:
    assert tiny_export.parity_images == tuple(p.name for p in sample_images)
    assert tiny_export.max_abs_diff_logits < 1e-4
    assert tiny_export.max_abs_diff_boxes < 1e-4
    assert any("parity vs PyTorch" in line for line in tiny_export.lines())


def test_metadata_carries_the_spec(tiny_onnx: Path, tiny_checkpoint: Path) -> None:
    from facemask_tools.training.checkpoint import read_checkpoint

    model = onnx.load(str(tiny_onnx))
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    spec = ModelSpec.from_json(metadata[METADATA_KEY])
    assert spec == ModelSpec.from_dict(read_checkpoint(tiny_checkpoint)["spec"])
    assert json.loads(metadata["classes"]) == list(spec.classes)
    assert metadata["input_size"] == "256x256"
    assert json.loads(metadata["mean"]) == list(spec.mean) and json.loads(metadata["std"]) == list(spec.std)
    assert json.loads(metadata["anchors"])["anchor_scale"] == spec.anchors.anchor_scale
    assert metadata["architecture"] == "tf_efficientdet_lite0"
    assert json.loads(metadata["logit_offsets"]) == {"all_levels": {}, "by_level": {}}
    for key in ("code_version", "exporter_version"):
        assert key in metadata


def test_graph_interface_and_checker(tiny_onnx: Path, tiny_export) -> None:
    onnx.checker.check_model(str(tiny_onnx), full_check=True)
    model = onnx.load(str(tiny_onnx))

    def dims(value_info) -> list:
        return [d.dim_value or d.dim_param for d in value_info.type.tensor_type.shape.dim]

    num_anchors = len(generate_anchors(tiny_export.spec))
    assert [(i.name, dims(i)) for i in model.graph.input] == [("images", [1, 3, 256, 256])]
    assert [(o.name, dims(o)) for o in model.graph.output] == [
        ("logits", [1, num_anchors, 3]),
        ("boxes", [1, num_anchors, 4]),
    ]
    assert model.opset_import[0].version == 17
    assert tiny_export.nodes_simplified < tiny_export.nodes_exported


def test_refuses_to_overwrite(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(FacemaskError, match="already exists.*--force"):
        export_onnx(tiny_checkpoint, out)
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize(
    ("checkpoint", "out", "error", "match"),
    [
        ("missing.pt", "model.onnx", FileNotFoundError, "checkpoint not found"),
        (None, "model.engine", FacemaskError, "must be an .onnx file"),
        ("not_a_checkpoint.pt", "model.onnx", FacemaskError, "not a readable PyTorch checkpoint"),
    ],
)
def test_bad_arguments(checkpoint, out, error, match, tiny_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "not_a_checkpoint.pt").write_text("hello")
    source = tiny_checkpoint if checkpoint is None else tmp_path / checkpoint
    with pytest.raises(error, match=match):
        export_onnx(source, tmp_path / out)
    assert not (tmp_path / out).exists()


def test_dynamic_size_export_matches_pytorch_at_another_size(tiny_any_size_export) -> None:
    import onnx

    report = tiny_any_size_export
    assert set(report.other_sizes) == {384}
    assert max(report.other_sizes[384]) < 1e-3
    image_input = onnx.load(str(report.path)).graph.input[0]
    dims = [d.dim_param or d.dim_value for d in image_input.type.tensor_type.shape.dim]
    assert dims == [1, 3, "height", "width"]
    assert "dynamic input size" in report.lines()[0]


def test_the_size_agnostic_network_is_the_same_network(tiny_checkpoint: Path) -> None:
    import dataclasses

    import torch

    from facemask_tools.training.checkpoint import load_network
    from facemask_tools.training.model import FlatHeads, create_network, make_size_agnostic

    network, spec, _ = load_network(tiny_checkpoint)
    reference = create_network(dataclasses.replace(spec, image_size=(384, 384))).eval()
    reference.load_state_dict(network.state_dict())
    agnostic = FlatHeads(make_size_agnostic(network)).eval()
    images = torch.rand(1, 3, 384, 384)
    with torch.no_grad():
        for got, expected in zip(agnostic(images), FlatHeads(reference).eval()(images)):
            assert torch.equal(got, expected)
        with pytest.raises(RuntimeError):  # the unpatched network is tied to its trained size
            FlatHeads(create_network(spec).eval())(images)
