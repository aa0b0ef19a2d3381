"""The shipped model: it loads by default, detects faces on the samples, and its val mAP (ONNX Runtime +
NumPy post-processing) matches what `facemask-sdk eval` measured on the checkpoint (effdet's own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
SHARED = ROOT.parent / "shared" / "datasets" / "face-mask-detection"

pytest.importorskip("onnxruntime")


def test_detector_uses_the_shipped_model_and_finds_faces():
    from facemask_sdk import Detector
    from facemask_sdk.models import shipped_model_path

    with Detector() as detector:
        assert detector.model_path == shipped_model_path() == ROOT / "models" / "facemask.onnx"
        found = [len(detector(path)) for path in sorted((ROOT / "samples" / "images").glob("*.png"))]
    assert sum(found) > 0, found


def test_readme_main_command_annotates_the_samples(tmp_path):
    out = tmp_path / "detect"
    result = subprocess.run(
        [sys.executable, "-m", "facemask_sdk.cli.main", "detect", str(ROOT / "samples" / "images"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = (out / "detections.jsonl").read_text().splitlines()
    assert len(lines) == len(list((ROOT / "samples" / "images").glob("*.png")))
    assert json.loads((out / "summary.json").read_text())["frames"] == len(lines)


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/datasets/face-mask-detection for the val split")
def test_shipped_onnx_reproduces_the_checkpoint_val_map():
    from facemask_sdk import Detector
    from facemask_sdk.metrics import evaluate_detections
    from facemask_sdk.voc import VocDataset

    stated = json.loads((MODELS / "facemask.eval.json").read_text())
    val = VocDataset(SHARED, "val")
    predictions = []
    with Detector(MODELS / "facemask.onnx", score_threshold=0.001, max_detections=100) as detector:
        for record in val.records:
            d = detector(record.load())
            predictions.append(d)
    ground_truth = [r.ground_truth() for r in val.records]
    metrics = evaluate_detections(ground_truth, predictions, detector.spec.classes)
    assert metrics["map"] == pytest.approx(stated["map"], abs=0.002)
    assert metrics["map50"] == pytest.approx(stated["map50"], abs=0.002)


def test_frame_buffer_on_onnx_runtime_is_a_plain_capture_array():
    from facemask_sdk import Detector, FacemaskError

    with Detector() as detector:
        frame = detector.frame_buffer(120, 160)
        assert frame.shape == (120, 160, 3) and frame.dtype.name == "uint8"
        assert detector(frame).xyxy.shape[1:] == (4,)  # a black frame runs through the whole pipeline
        with pytest.raises(FacemaskError, match="positive height and width"):
            detector.frame_buffer(0, 10)


@pytest.mark.parametrize("variant", ["facemask.onnx", "facemask.fp16.onnx", "facemask.int8.onnx"])
def test_every_shipped_variant_runs_at_the_sizes_it_declares(variant):
    """The FP32 and FP16 files take any multiple of 128 (a dynamic-size export); the INT8 one its 768 px."""
    from facemask_sdk import Detector
    from facemask_sdk.errors import FacemaskError

    sample = ROOT / "samples" / "images" / "maksssksksss7.png"
    sizes = (512, 640, 768) if variant != "facemask.int8.onnx" else (768,)
    for size in sizes:
        with Detector(MODELS / variant, backend="onnxruntime", input_size=size) as detector:
            assert len(detector(sample)) >= 2, (variant, size)  # three masked faces there, scores 0.5-0.9
    if variant == "facemask.int8.onnx":
        with pytest.raises(FacemaskError, match="768x768 images only"):
            Detector(MODELS / variant, backend="onnxruntime", input_size=640)


def test_the_shipped_onnx_holds_the_checkpoints_logit_offsets():
    """The offsets live in the weights (class head bias) or the graph (per-level constants), never in code:
    the ONNX records the same ones as the checkpoint, and its logits are the checkpoint's network's."""
    pytest.importorskip("torch")
    pytest.importorskip("effdet")
    import numpy as np
    import onnx
    import onnxruntime
    import torch

    from facemask_sdk.preprocess import preprocess
    from facemask_sdk.voc import VocDataset
    from facemask_tools.training.checkpoint import load_network
    from facemask_tools.training.model import FlatHeads

    network, spec, payload = load_network(MODELS / "facemask.pt")
    metadata = {entry.key: entry.value for entry in onnx.load(str(MODELS / "facemask.onnx")).metadata_props}
    recorded = {
        "all_levels": payload.get("class_logit_offsets") or {},
        "by_level": payload.get("level_logit_offsets") or {},
    }
    assert json.loads(metadata["logit_offsets"]) == recorded
    image = VocDataset(ROOT / "samples", "all", spec.classes).records[0].load()
    tensor = preprocess(image, spec)[0][None]
    session = onnxruntime.InferenceSession(str(MODELS / "facemask.onnx"), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {session.get_inputs()[0].name: tensor})[0]
    with torch.no_grad():
        torch_logits = FlatHeads(network)(torch.from_numpy(tensor))[0].numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-3)
