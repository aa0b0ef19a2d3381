"""Class-logit offsets folded into the class head's bias: the weights give exactly the shifted logits, the
sweep's stored-output predictions are those of the written checkpoint, and the command refuses bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("effdet")

from facemask_sdk.errors import FacemaskError  # noqa: E402
from facemask_sdk.voc import VocDataset  # noqa: E402
from facemask_tools.training.checkpoint import load_network, read_checkpoint, save_checkpoint  # noqa: E402
from facemask_tools.training.class_offset import (  # noqa: E402
    best_offset,
    predictions_with_offsets,
    write_offset_checkpoint,
)
from facemask_tools.training.evaluate import head_outputs, predict_records  # noqa: E402
from facemask_tools.training.model import FlatHeads  # noqa: E402
from facemask_tools.training.ship import ship  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
SHIPPED = ROOT / "models" / "facemask.pt"
RARE = "mask_weared_incorrect"


def _records(classes: tuple[str, ...]):
    return VocDataset(SAMPLES, "all", classes).records


def test_the_written_weights_shift_one_class_logit_and_nothing_else(tiny_checkpoint, tmp_path):
    out = write_offset_checkpoint(tiny_checkpoint, tmp_path / "offset.pt", RARE, -1.5, chosen_on="test")
    source, spec, _ = load_network(tiny_checkpoint)
    shifted, _, payload = load_network(out)
    images = torch.rand(2, 3, *spec.image_size)
    with torch.no_grad():
        logits, boxes = FlatHeads(source)(images)
        new_logits, new_boxes = FlatHeads(shifted)(images)
    rare = spec.classes.index(RARE)
    others = [index for index in range(len(spec.classes)) if index != rare]
    torch.testing.assert_close(new_logits[..., rare], logits[..., rare] - 1.5)
    torch.testing.assert_close(new_logits[..., others], logits[..., others])
    torch.testing.assert_close(new_boxes, boxes)
    assert payload["class_logit_offsets"] == {RARE: -1.5}
    assert payload["init"]["kind"] == "class_offset" and payload["init"]["source"] == str(tiny_checkpoint)
    assert "metrics" not in payload  # the source's val figures describe other weights

    again = write_offset_checkpoint(out, tmp_path / "twice.pt", RARE, -0.5, chosen_on="test")
    assert read_checkpoint(again)["class_logit_offsets"] == {RARE: -2.0}  # offsets add up
    shipped = ship(again, tmp_path / "shipped.pt")  # what package_model.sh does: the record travels
    assert read_checkpoint(shipped)["class_logit_offsets"] == {RARE: -2.0}


def test_stored_outputs_with_an_offset_predict_what_the_offset_checkpoint_predicts(tiny_checkpoint, tmp_path):
    network, spec, _ = load_network(tiny_checkpoint)
    records = _records(spec.classes)
    outputs = list(head_outputs(network, spec, records, progress=False))
    from_outputs = predictions_with_offsets(outputs, spec, {RARE: 2.0})
    out = write_offset_checkpoint(tiny_checkpoint, tmp_path / "offset.pt", RARE, 2.0, chosen_on="test")
    shifted, _, _ = load_network(out)
    from_weights = predict_records(shifted, spec, records, progress=False)
    assert len(from_outputs) == len(records) == 4
    for a, b in zip(from_outputs, from_weights):
        assert len(a) == len(b) > 0
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)


@pytest.mark.skipif(not SHIPPED.is_file(), reason="the shipped model models/facemask.pt is missing")
def test_a_negative_offset_takes_faces_from_the_rare_class_on_the_shipped_model():
    network, spec, _ = load_network(SHIPPED)
    outputs = list(head_outputs(network, spec, _records(spec.classes), progress=False))
    rare = spec.classes.index(RARE)

    def confident_rare(offset: float) -> int:
        found = predictions_with_offsets(outputs, spec, {RARE: offset})
        return sum(int(np.sum((d.class_ids == rare) & (d.scores >= 0.4))) for d in found)

    assert confident_rare(0.0) >= 1  # the samples hold a mask worn incorrectly, and the model says so
    assert confident_rare(-20.0) == 0
    assert confident_rare(3.0) > confident_rare(0.0)


def test_best_offset_takes_the_highest_right_class_share_and_the_smallest_change_on_ties():
    def row(right: int) -> dict:
        return {"by_size": {"buckets": {"a": {"faces": 10, "right_class": right}, "b": {"faces": 0, "right_class": 0}}}}

    assert best_offset({-2.0: row(7), -1.0: row(8), 0.0: row(6)}) == -1.0
    assert best_offset({-2.0: row(8), -1.0: row(8), 0.0: row(7)}) == -1.0
    assert best_offset({-1.0: row(5), 0.0: row(5)}) == 0.0


def test_resume_checkpoints_are_refused(tiny_checkpoint, tmp_path):
    payload = read_checkpoint(tiny_checkpoint)
    resume = save_checkpoint(tmp_path / "last.pt", {**payload, "ema": {"weights": payload["state_dict"]}})
    with pytest.raises(FacemaskError, match="resume checkpoint"):
        write_offset_checkpoint(resume, tmp_path / "out.pt", RARE, -1.0, chosen_on="test")


def test_the_command_measures_writes_and_refuses(run_dev, tiny_checkpoint, tmp_path):
    out = tmp_path / "offset.pt"
    args = ["class-offset", tiny_checkpoint, "--data", SAMPLES, "--offsets", "-1,0", "--malloc", "libc"]
    done = run_dev([*args, "--out", out])
    assert done.returncode == 0, done.stderr
    table = [line for line in done.stdout.splitlines() if line.startswith("| -1 |") or line.startswith("| 0 |")]
    assert len(table) == 2
    chosen = float(done.stdout.split("best offset: ")[1].split()[0])
    assert chosen in (-1.0, 0.0)
    assert read_checkpoint(out)["class_logit_offsets"] == {RARE: chosen}

    kept = out.read_bytes()
    again = run_dev([*args, "--out", out])  # an existing output is never overwritten without --force
    assert again.returncode == 2 and again.stderr.strip().startswith("error:") and "--force" in again.stderr
    assert out.read_bytes() == kept
    for bad, reason in (
        (["--offsets", "-1,x"], "offsets"),
        (["--offsets", "nan"], "offsets"),
        (["--class", "hat"], "not one of this model's classes"),
        (["--out", tiny_checkpoint], "checkpoint itself"),
    ):
        refused = run_dev(["class-offset", tiny_checkpoint, "--data", SAMPLES, "--malloc", "libc", *bad])
        assert refused.returncode == 2, (bad, refused.stderr)
        assert reason in refused.stderr and "Traceback" not in refused.stderr, (bad, refused.stderr)
