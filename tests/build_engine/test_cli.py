"""The `export` and `build-engine` command lines (facemask_tools.build_engine.cli): overwrite rules, a dynamic
batch, --onnx-only conversions, batch options, and the device command where TensorRT is missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from facemask_tools.build_engine.tensorrt_build import tensorrt_version  # noqa: E402

# -- export ------------------------------------------------------------------------------------------


def test_cli_refuses_overwrite_without_force(run_cli, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"keep me")
    result = run_cli(["export", "--checkpoint", tiny_checkpoint, "--out", out])
    assert result.returncode != 0
    assert "--force" in result.stderr and "Traceback" not in result.stderr
    assert out.read_bytes() == b"keep me"


@pytest.mark.slow
def test_cli_dynamic_batch_with_force(run_cli, tiny_checkpoint: Path, tmp_path: Path, sample_images: list) -> None:
    """A second export (about 10 s): --dynamic-batch --force, then a batch of 3 through ONNX Runtime."""
    from facemask_sdk.backends.onnxrt import OnnxRuntimeRunner
    from facemask_sdk.image_io import read_image
    from facemask_sdk.preprocess import preprocess

    out = tmp_path / "dynamic.onnx"
    out.write_bytes(b"old")
    result = run_cli(["export", "--checkpoint", tiny_checkpoint, "--out", out, "--dynamic-batch", "--force"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "parity vs PyTorch" in result.stdout and "[dynamic, 3, 256, 256]" in result.stdout

    with OnnxRuntimeRunner(out) as runner:
        assert runner.batch_size is None
        batch = np.stack([preprocess(read_image(p), runner.spec)[0] for p in sample_images[:3]])
        logits, boxes = runner.run(batch)
        single = runner.run(batch[1:2])
    assert logits.shape[0] == boxes.shape[0] == 3
    np.testing.assert_allclose(logits[1:2], single[0], atol=1e-5)


# -- build-engine ------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["--int8", "--fp16"])
def test_cli_onnx_only(run_cli, model_copy: Path, precision: str, sample_images):
    args = ["build-engine", "--onnx", model_copy, precision, "--calib-data", sample_images[0].parent, "--onnx-only"]
    result = run_cli(args)
    assert result.returncode == 0, result.stderr
    written = model_copy.with_name(f"model.{precision[2:]}.onnx")
    assert written.is_file()
    assert "on the target device run: facemask-sdk build-engine --onnx" in result.stdout
    again = run_cli(args)  # the same conversion again: identical result, file left alone
    assert again.returncode == 0 and "is up to date" in again.stdout, again.stderr
    written.write_bytes(written.read_bytes() + b"\0")  # now it differs: never overwrite without --force
    changed = written.read_bytes()
    refused = run_cli(args)
    assert refused.returncode != 0 and "already exists and differs" in refused.stderr and "--force" in refused.stderr
    assert written.read_bytes() == changed
    forced = run_cli([*args, "--force"])
    assert forced.returncode == 0, forced.stderr
    assert written.read_bytes() != changed
    assert not list(written.parent.glob(".*.check.onnx"))


@pytest.mark.skipif(tensorrt_version() is not None, reason="TensorRT is installed here")
def test_cli_without_tensorrt_says_where_to_build(run_cli, model_copy: Path):
    result = run_cli(["build-engine", "--onnx", model_copy, "--fp16"])
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "TensorRT is not installed" in lines[0] and "target device" in lines[0]
    assert f"facemask-sdk build-engine --onnx {model_copy.with_name('model.fp16.onnx')} --fp16 --batch 1" in lines[0]
    assert model_copy.with_name("model.fp16.onnx").is_file()  # the precision ONNX is written anyway


def test_cli_int8_exclude(run_cli, model_copy: Path, sample_images):
    """--int8-exclude names what stays in float (recorded in the variant); 'none' quantises every Conv."""
    import json

    import onnx

    convs = [n.name for n in onnx.load(str(model_copy)).graph.node if n.op_type == "Conv"]
    common = ["build-engine", "--onnx", model_copy, "--int8", "--calib-data", sample_images[0].parent, "--onnx-only"]
    for option, excluded in ((["--int8-exclude", convs[1]], [convs[1]]), (["--int8-exclude", "none"], [])):
        out = model_copy.with_name(f"q{len(excluded)}.onnx")
        result = run_cli([*common, *option, "--out", out])
        assert result.returncode == 0, result.stderr
        calibration = {p.key: p.value for p in onnx.load(str(out)).metadata_props}["int8.calibration"]
        assert json.loads(calibration)["excluded"] == excluded
    for option, message in ((["none", "stem"], "cannot be combined"), (["conv_missing"], "matches no node")):
        result = run_cli(
            [*common, *(a for o in option for a in ("--int8-exclude", o)), "--out", model_copy.with_name("bad.onnx")]
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (
            result.stderr
        )
        assert not model_copy.with_name("bad.onnx").exists()


def test_cli_rejects_conflicting_batch_options(run_cli, model_copy: Path):
    result = run_cli(["build-engine", "--onnx", model_copy, "--batch", "2", "--dynamic-batch", "1,2,4", "--onnx-only"])
    assert result.returncode != 0 and "either --batch" in result.stderr


def test_cli_static_model_refuses_dynamic_batch(run_cli, model_copy: Path):
    result = run_cli(["build-engine", "--onnx", model_copy, "--dynamic-batch", "1,2,4", "--onnx-only"])
    assert result.returncode != 0 and "--dynamic-batch" in result.stderr and "static batch of 1" in result.stderr
    assert not model_copy.with_name("model.fp16.onnx").exists()  # checked before any conversion
