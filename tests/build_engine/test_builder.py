"""`facemask-sdk build-engine` as a library call (facemask_tools.build_engine.builder): output paths, calibration images from a
folder, and an up-to-date variant that is never converted again (`model_copy`: tests/build_engine/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from facemask_sdk.errors import FacemaskError  # noqa: E402
from facemask_tools.build_engine.builder import calibration_images, output_paths  # noqa: E402
from facemask_tools.build_engine.precision import variant_path  # noqa: E402


@pytest.mark.parametrize(
    "precision, out, expected, error",
    [
        ("fp16", None, ("m/model.fp16.onnx", "m/model.fp16.engine"), None),
        ("int8", None, ("m/model.int8.onnx", "m/model.int8.engine"), None),
        ("fp32", None, ("m/model.onnx", "m/model.engine"), None),
        ("int8", "x/q.onnx", ("x/q.onnx", "x/q.engine"), None),
        ("int8", "x/q.plan", ("x/q.onnx", "x/q.plan"), None),
        ("int8", "x/q.bin", None, "must end in .onnx"),
    ],
)
def test_output_paths(precision, out, expected, error):
    if error:
        with pytest.raises(FacemaskError, match=error):
            output_paths(Path("m/model.onnx"), precision, Path(out))
        return
    onnx_path, engine = output_paths(Path("m/model.onnx"), precision, Path(out) if out else None)
    assert (str(onnx_path), str(engine)) == expected
    if out is None:
        assert variant_path(Path("m/model.onnx"), precision) == onnx_path


def test_calibration_images_from_a_folder(sample_images):
    folder = sample_images[0].parent
    assert calibration_images(folder, 10) == sample_images
    assert calibration_images(folder, 2) == [sample_images[0], sample_images[2]]
    with pytest.raises(FacemaskError, match="--calib-images must be a whole number >= 1"):
        calibration_images(folder, 0)


def test_up_to_date_is_read_from_the_recorded_key_not_a_new_conversion(model_copy: Path, monkeypatch):
    """A second `build` with the same model and options converts nothing; a changed source model makes
    the existing variant stale, and it is refused rather than overwritten."""
    from facemask_tools.build_engine import builder, fp16
    from facemask_tools.build_engine.precision import CONVERSION_KEY, metadata

    first = builder.build(onnx=model_copy, precision="fp16", onnx_only=True, echo=lambda line: None)
    recorded = metadata(onnx.load(str(first.precision_onnx)))[CONVERSION_KEY]
    assert recorded == fp16.fp16_conversion_key(model_copy)

    def no_conversion(*args, **kwargs):
        raise AssertionError("an up-to-date variant must not be converted again")

    monkeypatch.setattr(fp16, "to_fp16", no_conversion)
    again = builder.build(onnx=model_copy, precision="fp16", onnx_only=True, echo=lambda line: None)
    assert any("is up to date" in line for line in again.lines)
    model = onnx.load(str(model_copy))
    model.producer_version = "re-exported"
    onnx.save(model, str(model_copy))
    with pytest.raises(FacemaskError, match="already exists and differs"):
        builder.build(onnx=model_copy, precision="fp16", onnx_only=True, echo=lambda line: None)
