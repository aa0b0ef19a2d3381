"""`facemask-sdk build-engine` as a library call: ONNX -> precision ONNX -> TensorRT engine + sidecar.

    >>> result = build(precision="int8", onnx_only=True)     # models/facemask.int8.onnx, no engine
    >>> result.precision_onnx, result.device_command

Where TensorRT or a GPU is missing (a development PC, CI), the precision ONNX is still written and
`TensorRTUnavailable` says which command builds the engine on the target device; with
`onnx_only=True` stopping there is the intended outcome. Nothing is overwritten without `force`:
an existing precision ONNX whose recorded conversion key (`precision.CONVERSION_KEY`: source model,
options, library versions) equals the one these options give is reported up to date without converting
again; one that differs is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from facemask_sdk.errors import DataError, FacemaskError
from facemask_sdk.image_io import IMAGE_SUFFIXES
from facemask_sdk.validation import whole_number
from facemask_tools.build_engine.calibration import DEFAULT_METHOD
from facemask_tools.build_engine.int8 import DEFAULT_EXCLUDE
from facemask_tools.build_engine.precision import (
    PRECISIONS,
    load_model,
    model_precision,
    model_spec,
    recorded_conversion_key,
    variant_path,
)
from facemask_tools.build_engine.tensorrt_build import (
    ENGINE_SUFFIXES,
    BatchProfile,
    BuildOptions,
    EngineReport,
    TensorRTUnavailable,
    build_engine,
    check_batch,
    device_command,
)
from facemask_tools.paths import DATASET, SAMPLES

DEFAULT_CALIB_DATA = DATASET
"""The project's copy of the Kaggle dataset (its train split calibrates INT8 when present)."""
SAMPLES_DIR = SAMPLES / "images"
"""Fallback calibration images (4 CC0 samples) for a clone without the dataset."""
DEFAULT_CALIB_IMAGES = 256
DEFAULT_CALIB_METHOD = DEFAULT_METHOD


@dataclass(frozen=True)
class Int8Options:
    """How an INT8 variant is made: calibration data and method, what stays in float and in which type."""

    calib_data: Path | None = None
    calib_images: int = DEFAULT_CALIB_IMAGES
    method: str = DEFAULT_CALIB_METHOD
    float_type: str = "fp16"
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE


@dataclass
class BuildResult:
    precision: str
    source_onnx: Path
    precision_onnx: Path
    engine: Path
    device_command: str
    lines: list[str] = field(default_factory=list)
    engine_report: EngineReport | None = None


def build(
    onnx: Path | None = None,
    precision: str = "fp16",
    int8: Int8Options = Int8Options(),
    batch: BatchProfile | None = None,
    workspace_gb: float | None = None,
    out: Path | None = None,
    onnx_only: bool = False,
    force: bool = False,
    echo: Callable[[str], None] = print,
    input_size: int | None = None,
) -> BuildResult:
    """Write the precision ONNX (unless `onnx` already is one), then the engine; see the module docs."""
    from facemask_sdk.models import default_model_path

    if precision not in PRECISIONS:
        raise FacemaskError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    source = Path(onnx) if onnx is not None else default_model_path()
    source_model = load_model(source)
    model_spec(source_model, source)  # refuses an ONNX without facemask-sdk metadata, before any work
    recorded = model_precision(source_model)
    if recorded not in ("fp32", precision):
        raise FacemaskError(
            f"{source} is already a {recorded} model; pass --{recorded} to build its engine, "
            f"or start from the FP32 export for {precision}"
        )
    options = BuildOptions(
        precision=precision, batch=batch or BatchProfile(), workspace_gb=workspace_gb, input_size=input_size
    )
    check_batch(source, options.batch)
    precision_onnx, engine = output_paths(source, precision, out, convert=recorded == "fp32")
    command = device_command(precision_onnx, options, None if out is None else engine)
    result = BuildResult(precision, source, precision_onnx, engine, command)

    def say(line: str) -> None:
        result.lines.append(line)
        echo(line)

    converting = precision != "fp32" and recorded == "fp32"
    if not onnx_only and engine.exists() and not force:
        raise FacemaskError(f"{engine} already exists; pass --force to replace it")
    if converting and precision_onnx.exists() and not force:
        # a variant records a key of what it was made from: equal keys mean up to date, no re-conversion
        expected = _conversion_key(source, precision, int8)
        if recorded_conversion_key(precision_onnx) != expected:
            raise FacemaskError(
                f"{precision_onnx} already exists and differs from what these options produce (made from another "
                f"source model, with other options or onnx/onnxruntime versions, by an older facemask-sdk, or "
                f"edited); pass --force to replace it, or --onnx {precision_onnx} to build the engine from it"
            )
        say(f"{precision_onnx} is up to date (made from {source.name} with these options); left as it is")
    elif converting:
        for line in _convert(source, precision_onnx, precision, int8, force):
            say(line)
    else:
        say(f"{precision_onnx} is already {precision}; no conversion needed")
    if onnx_only:
        say(f"engine not built (--onnx-only); on the target device run: {command}")
        return result
    try:
        result.engine_report = build_engine(precision_onnx, engine, options, overwrite=force)
    except TensorRTUnavailable as exc:
        kept = "is ready" if precision_onnx.exists() else "was not written"
        raise TensorRTUnavailable(
            f"{exc.reason}, so no engine was built; {precision_onnx} {kept}", f"{command} (or pass --onnx-only here)"
        ) from None
    for line in result.engine_report.lines():
        say(line)
    return result


def output_paths(source: Path, precision: str, out: Path | None, convert: bool = True) -> tuple[Path, Path]:
    """(precision ONNX, engine). `out` ending in .onnx names the precision ONNX (engine beside it);
    ending in .engine/.plan/.trt it names the engine (precision ONNX beside it, same stem)."""
    if out is None:
        onnx_path = variant_path(source, precision) if convert else source
        return onnx_path, onnx_path.with_suffix(".engine")
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix == ".onnx":
        return (out if convert else source), out.with_suffix(".engine")
    if suffix in ENGINE_SUFFIXES:
        return (out.with_suffix(".onnx") if convert else source), out
    raise FacemaskError(
        f"--out must end in .onnx (the precision model) or {', '.join(ENGINE_SUFFIXES)} (the engine), got {out}"
    )


def calibration_images(source: Path | None = None, count: int = DEFAULT_CALIB_IMAGES) -> list[Path]:
    """`count` images spread evenly over a VOC dataset's train split or a folder of images (sorted).

    `source=None`: the project dataset (`../shared/datasets/face-mask-detection`) if present, else
    the repository's `samples/images`.
    """
    whole_number("--calib-images", count)
    if source is None:
        source = DEFAULT_CALIB_DATA if (DEFAULT_CALIB_DATA / "images").is_dir() else SAMPLES_DIR
        if not source.is_dir():  # installed from a wheel: no checkout beside it to take defaults from
            raise DataError(
                "INT8 calibration needs images: pass --calib-data DIR (a VOC dataset or a folder "
                "of images from the training split)"
            )
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"calibration data {source} is not a folder (a VOC dataset or a folder of images)")
    if (source / "images").is_dir() and (source / "annotations").is_dir():
        from facemask_sdk.voc import VocDataset

        paths = [record.image_path for record in VocDataset(source, "train").records]
    else:
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {source}")
    if count >= len(paths):
        return paths
    step = len(paths) / count
    return [paths[int(i * step)] for i in range(count)]


def _conversion_key(source: Path, precision: str, int8: Int8Options) -> str:
    if precision == "fp16":
        from facemask_tools.build_engine.fp16 import fp16_conversion_key

        return fp16_conversion_key(source)
    from facemask_tools.build_engine.int8 import int8_conversion_key

    images = calibration_images(int8.calib_data, int8.calib_images)
    return int8_conversion_key(source, images, method=int8.method, exclude=int8.exclude, high_precision=int8.float_type)


def _convert(source: Path, target: Path, precision: str, int8: Int8Options, force: bool) -> list[str]:
    if precision == "fp16":
        from facemask_tools.build_engine.fp16 import to_fp16

        report = to_fp16(source, target, overwrite=force)
        return [f"wrote {target}", *report.lines()]
    from facemask_tools.build_engine.int8 import to_int8

    images = calibration_images(int8.calib_data, int8.calib_images)
    report = to_int8(
        source,
        target,
        images,
        method=int8.method,
        exclude=int8.exclude,
        high_precision=int8.float_type,
        overwrite=force,
    )
    return [f"wrote {target}", *report.lines()]
