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
    result = subprocess.run(
        CLI + ["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(SAMPLES)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "runs" / "eval" / f"{tiny_checkpoint.stem}-{SAMPLES.name}-all" / "eval.json").is_file()
    assert not (tiny_checkpoint.parent / f"eval-{tiny_checkpoint.stem}-val").exists()
    assert "FutureWarning" not in result.stderr


def test_eval_rejects_a_file_that_is_not_a_checkpoint(tmp_path, refusal):
    bogus = tmp_path / "model.pt"
    bogus.write_text("hello")
    assert "not a readable PyTorch checkpoint" in refusal(["eval", "--checkpoint", bogus, "--data", SAMPLES]).stderr


def test_eval_reports_ap_at_one_iou_and_the_face_size_breakdown(tmp_path):
    """The shipped model on the samples' close-up view: every labelled face lands in a size bucket, and
    the printed table is the one eval.json holds."""
    import json

    from facemask_tools.training.closeups import write_closeups

    view = tmp_path / "closeups"
    write_closeups(str(SAMPLES), "all", view, progress=False)
    result = run(
        [
            "eval",
            "--checkpoint",
            str(ROOT / "models" / "facemask.pt"),
            "--data",
            str(view),
            "--iou",
            "0.3",
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["split"] == "all"  # a folder without splits/ is evaluated whole
    assert report["closeup_check"]["shrink"] == 3.0  # measured as the product runs: with the close-up check
    buckets = report["by_size"]["buckets"]
    assert report["by_size"]["iou_threshold"] == 0.3
    assert sum(row["faces"] for row in buckets.values()) == report["ground_truth_boxes"]
    assert buckets["0.25-0.5"]["faces"] + buckets[">0.5"]["faces"] > 0
    assert 0.0 < report["ap_at_iou"] <= 1.0
    assert f"AP@0.3 {report['ap_at_iou']:.4f}" in result.stdout
    for name, row in buckets.items():
        if row["found"]:
            assert f"{row['faces']:>6}{row['found_share']:>7.2f}{row['right_class_share']:>13.2f}" in result.stdout, (
                name
            )


def test_eval_refuses_an_iou_outside_zero_to_one(tmp_path, tiny_checkpoint):
    result = run(
        [
            "eval",
            "--checkpoint",
            str(tiny_checkpoint),
            "--data",
            str(SAMPLES),
            "--iou",
            "1.5",
            "--out",
            str(tmp_path / "e"),
        ]
    )
    assert result.returncode != 0 and result.stderr.strip().startswith("error: --iou") and not (tmp_path / "e").exists()


def test_eval_measures_the_closeup_check_as_the_detector_runs_it(tmp_path):
    """The evaluation's PyTorch path and the `Detector` (ONNX Runtime) give the same classes on the shipped
    model's close-ups, through the one `facemask_sdk.closeups`; the check changes some of them."""
    pytest.importorskip("onnxruntime")
    import numpy as np

    from facemask_sdk import Detector
    from facemask_sdk.voc import VocDataset
    from facemask_tools.training.checkpoint import load_network
    from facemask_tools.training.closeups import write_closeups
    from facemask_tools.training.evaluate import predict_records

    write_closeups(str(SAMPLES), "all", tmp_path / "view", progress=False)
    records = [r for r in VocDataset(tmp_path / "view", "all").records if r.stem.startswith("maksssksksss29")]
    network, spec, _ = load_network(ROOT / "models" / "facemask.pt")
    checked = predict_records(network, spec, records, progress=False)  # at the evaluation's score 0.001
    alone = predict_records(network, spec, records, progress=False, closeup_check=None)
    with Detector() as detector:  # the product's defaults: score 0.4
        runtime = [detector(record.load()) for record in records]
    assert any((c.class_ids != a.class_ids).any() for c, a in zip(checked, alone))
    for ours, theirs in zip(checked, runtime):
        ours = ours[ours.scores >= detector.config.score_threshold]
        np.testing.assert_array_equal(ours.class_ids, theirs.class_ids)
        np.testing.assert_allclose(ours.xyxy, theirs.xyxy, atol=0.5)
