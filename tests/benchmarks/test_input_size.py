"""`dev input-size`: a checkpoint's own network at each size, its logit offsets included."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("effdet")

from facemask_sdk.voc import VocDataset  # noqa: E402
from facemask_tools.benchmarks.input_size import evaluate_sizes  # noqa: E402
from facemask_tools.training.checkpoint import load_network  # noqa: E402
from facemask_tools.training.class_offset import write_offset_checkpoint  # noqa: E402
from facemask_tools.training.evaluate import evaluate_network  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
SHIPPED = ROOT / "models" / "facemask.pt"


@pytest.mark.skipif(not SHIPPED.is_file(), reason="the shipped model models/facemask.pt is missing")
def test_each_size_is_the_checkpoints_own_network_with_its_level_offsets(tmp_path):
    # with_mask made unlikely on P4-P7 (faces of 40 px and more at 768 px): the samples' figures must move
    shifted = write_offset_checkpoint(SHIPPED, tmp_path / "top.pt", "with_mask", -8.0, "test", from_level=4)
    rows = evaluate_sizes(shifted, [768], SAMPLES, split="all")
    network, spec, _ = load_network(shifted)
    metrics, _ = evaluate_network(network, spec, VocDataset(SAMPLES, "all", spec.classes).records, progress=False)
    unshifted = evaluate_sizes(SHIPPED, [768], SAMPLES, split="all")
    assert rows[0]["map"] == pytest.approx(metrics["map"]) and rows[0]["map50"] == pytest.approx(metrics["map50"])
    assert (rows[0]["map"], rows[0]["map50"]) != (unshifted[0]["map"], unshifted[0]["map50"])
