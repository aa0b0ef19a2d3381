"""Class-logit offsets folded into the class head's bias: the weights give exactly the shifted logits, the
sweep's stored-output predictions are those of the written checkpoint, and the command refuses bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("effdet")

from facemask_sdk.anchors import anchor_levels  # noqa: E402
from facemask_sdk.errors import FacemaskError  # noqa: E402
from facemask_sdk.voc import VocDataset  # noqa: E402
from facemask_tools.dev import dev  # noqa: E402
from facemask_tools.training.checkpoint import load_network, read_checkpoint, save_checkpoint  # noqa: E402
from facemask_tools.training.class_offset import (  # noqa: E402
    best_choice,
    candidate_outputs,
    shifted_outputs,
    write_offset_checkpoint,
)
from facemask_tools.training.evaluate import detections_from_outputs, head_outputs, predict_records  # noqa: E402
from facemask_tools.training.model import FlatHeads  # noqa: E402
from facemask_tools.training.ship import ship  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
SHIPPED = ROOT / "models" / "facemask.pt"
RARE = "mask_weared_incorrect"


def _records(classes: tuple[str, ...]):
    return VocDataset(SAMPLES, "all", classes).records


def _heads_before_and_after(source: Path, shifted: Path):
    """spec, (logits, boxes) of `source`'s network, the same of `shifted`'s, on the same two random images."""
    before, spec, _ = load_network(source)
    after, _, _ = load_network(shifted)
    images = torch.rand(2, 3, *spec.image_size)
    with torch.no_grad():
        return spec, FlatHeads(before)(images), FlatHeads(after)(images), images


def test_the_written_weights_shift_one_class_logit_and_nothing_else(tiny_checkpoint, tmp_path):
    out = write_offset_checkpoint(tiny_checkpoint, tmp_path / "offset.pt", RARE, -1.5, "test")
    spec, (logits, boxes), (new_logits, new_boxes), _ = _heads_before_and_after(tiny_checkpoint, out)
    payload = read_checkpoint(out)
    rare = spec.classes.index(RARE)
    others = [index for index in range(len(spec.classes)) if index != rare]
    torch.testing.assert_close(new_logits[..., rare], logits[..., rare] - 1.5)
    torch.testing.assert_close(new_logits[..., others], logits[..., others])
    torch.testing.assert_close(new_boxes, boxes)
    assert payload["class_logit_offsets"] == {RARE: -1.5}
    assert payload["init"]["kind"] == "class_offset" and payload["init"]["source"] == str(tiny_checkpoint)
    assert "metrics" not in payload  # the source's val figures describe other weights

    again = write_offset_checkpoint(out, tmp_path / "twice.pt", RARE, -0.5, "test")
    assert read_checkpoint(again)["class_logit_offsets"] == {RARE: -2.0}  # offsets add up
    shipped = ship(again, tmp_path / "shipped.pt")  # what package_model.sh does: the record travels
    assert read_checkpoint(shipped)["class_logit_offsets"] == {RARE: -2.0}


def _stored(network, spec) -> list:
    outputs = head_outputs(network, spec, _records(spec.classes), progress=False)
    return list(candidate_outputs(outputs, spec, spec.classes.index(RARE)))


def _same_detections(found, expected) -> None:
    assert len(found) == len(expected) == 4
    for a, b in zip(found, expected):
        assert len(a) == len(b) > 0
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)


@pytest.mark.parametrize("from_level", [3, 6])
def test_stored_outputs_with_an_offset_predict_what_the_offset_checkpoint_predicts(
    tiny_checkpoint, tmp_path, from_level
):
    network, spec, _ = load_network(tiny_checkpoint)
    stored = _stored(network, spec)
    rare = spec.classes.index(RARE)
    from_outputs = detections_from_outputs(shifted_outputs(stored, rare, from_level, 2.0), spec.classes)
    out = write_offset_checkpoint(tiny_checkpoint, tmp_path / "offset.pt", RARE, 2.0, "test", from_level=from_level)
    shifted, _, _ = load_network(out)
    _same_detections(from_outputs, predict_records(shifted, spec, _records(spec.classes), progress=False))


def test_top_level_offsets_move_those_levels_only_and_travel_into_the_onnx_graph(tiny_checkpoint, tmp_path):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from facemask_tools.build_engine.export import export_onnx

    out = write_offset_checkpoint(tiny_checkpoint, tmp_path / "top.pt", RARE, -2.5, "test", from_level=6)
    payload = read_checkpoint(out)
    assert payload["level_logit_offsets"] == {RARE: {"6": -2.5, "7": -2.5}}
    assert "class_logit_offsets" not in payload
    shipped = read_checkpoint(ship(out, tmp_path / "shipped.pt"))  # what package_model.sh does
    assert shipped["level_logit_offsets"] == payload["level_logit_offsets"]
    spec, (logits, boxes), (new_logits, new_boxes), images = _heads_before_and_after(tiny_checkpoint, out)
    expected = logits.clone()
    top = torch.from_numpy(anchor_levels(spec) >= 6)
    expected[:, top, spec.classes.index(RARE)] -= 2.5
    torch.testing.assert_close(new_logits, expected)
    torch.testing.assert_close(new_boxes, boxes)

    report = export_onnx(out, tmp_path / "top.onnx", dynamic_size=True, size_checks=(128,))
    assert json.loads(report.metadata["logit_offsets"])["by_level"] == {RARE: {"6": -2.5, "7": -2.5}}
    onnx_path = report.path
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {session.get_inputs()[0].name: images[:1].numpy()})[0]
    np.testing.assert_allclose(onnx_logits, expected[:1].numpy(), atol=1e-4)


@pytest.mark.skipif(not SHIPPED.is_file(), reason="the shipped model models/facemask.pt is missing")
def test_a_negative_offset_takes_faces_from_the_rare_class_on_the_shipped_model():
    network, spec, _ = load_network(SHIPPED)
    stored = _stored(network, spec)
    assert 0 < sum(len(logits) for logits, *_ in stored) < 4 * len(anchor_levels(spec)) / 3  # a fraction kept
    rare = spec.classes.index(RARE)

    def confident_rare(offset: float) -> int:
        found = detections_from_outputs(shifted_outputs(stored, rare, 3, offset), spec.classes)
        return sum(int(np.sum((d.class_ids == rare) & (d.scores >= 0.4))) for d in found)

    assert confident_rare(0.0) >= 1  # the samples hold a mask worn incorrectly, and the model says so
    assert confident_rare(-20.0) == 0
    assert confident_rare(3.0) > confident_rare(0.0)


def test_best_choice_takes_the_highest_right_class_share_then_the_smallest_change_then_fewest_levels():
    def row(right: int) -> dict:
        return {"by_size": {"buckets": {"a": {"faces": 10, "right_class": right}, "b": {"faces": 0, "right_class": 0}}}}

    assert best_choice({(3, -2.0): row(7), (3, -1.0): row(8), (3, 0.0): row(6)}) == (3, -1.0)
    assert best_choice({(3, -2.0): row(8), (3, -1.0): row(8), (3, 0.0): row(7)}) == (3, -1.0)
    assert best_choice({(3, -1.0): row(5), (3, 0.0): row(5)}) == (3, 0.0)
    assert best_choice({(3, -1.0): row(8), (6, -1.0): row(8), (7, -2.0): row(8)}) == (6, -1.0)


def test_resume_checkpoints_are_refused(tiny_checkpoint, tmp_path):
    payload = read_checkpoint(tiny_checkpoint)
    resume = save_checkpoint(tmp_path / "last.pt", {**payload, "ema": {"weights": payload["state_dict"]}})
    with pytest.raises(FacemaskError, match="resume checkpoint"):
        write_offset_checkpoint(resume, tmp_path / "out.pt", RARE, -1.0, "test")


def test_the_command_measures_writes_and_refuses(run_dev, tiny_checkpoint, tmp_path, refusal):
    out = tmp_path / "offset.pt"
    args = ["class-offset", tiny_checkpoint, "--data", SAMPLES, "--offsets", "-1,0", "--malloc", "libc"]
    done = run_dev([*args, "--out", out])
    assert done.returncode == 0, done.stderr
    offsets = [line.split("|")[2].strip() for line in done.stdout.splitlines() if line.startswith("| P3-P7 |")]
    assert sorted(offsets) == ["-1", "0"]
    chosen = done.stdout.split("best: offset ")[1].split()[0]
    assert chosen in offsets
    recorded = read_checkpoint(out).get("class_logit_offsets") or {}  # offset 0: no change, nothing recorded
    assert recorded.get(RARE, 0.0) == float(chosen) and ("level_logit_offsets" not in read_checkpoint(out))

    kept = out.read_bytes()
    payload = read_checkpoint(tiny_checkpoint)
    resume = save_checkpoint(tmp_path / "last.pt", {**payload, "ema": {"weights": payload["state_dict"]}})
    for bad, reason in (
        (["--out", out], "--force"),  # an existing output is never overwritten without --force
        (["--offsets", "-1,x"], "offsets"),
        (["--offsets", "nan"], "offsets"),
        (["--iou", "1.5"], "--iou must lie between 0 and 1"),
        (["--class", "hat"], "not one of this model's classes"),
        (["--from-levels", "9"], "--from-levels must lie in the model's levels 3-7"),
        (["--from-levels", "six"], "levels"),
        (["--out", tiny_checkpoint], "checkpoint itself"),
    ):
        refused = refusal(["class-offset", tiny_checkpoint, "--data", SAMPLES, "--malloc", "libc", *bad], group=dev)
        assert reason in refused.stderr, (bad, refused.stderr)
    refused = refusal(["class-offset", resume, "--data", SAMPLES, "--malloc", "libc"], group=dev)
    assert "resume checkpoint" in refused.stderr and "best:" not in refused.stdout
    assert out.read_bytes() == kept


def test_an_offset_on_a_level_the_model_lacks_is_refused(tiny_checkpoint, tmp_path):
    with pytest.raises(FacemaskError, match="pyramid level 8"):
        write_offset_checkpoint(tiny_checkpoint, tmp_path / "out.pt", RARE, -1.0, "test", from_level=8)
    assert not (tmp_path / "out.pt").exists()
