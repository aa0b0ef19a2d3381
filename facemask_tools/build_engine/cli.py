"""Model-building commands of `facemask-sdk` (loaded lazily by `facemask_sdk.cli.main`).

`export`: checkpoint -> ONNX with metadata and a parity check. `build-engine`: ONNX -> FP16/INT8
ONNX -> TensorRT engine + sidecar (`facemask_tools.build_engine.builder.build`). The heavy libraries (torch, onnx)
load only when a command runs, so other commands defined here stay cheap to list.
"""

from __future__ import annotations

from pathlib import Path

import click

from facemask_sdk.errors import FacemaskError
from facemask_tools.build_engine.builder import DEFAULT_CALIB_IMAGES
from facemask_tools.build_engine.calibration import DEFAULT_METHOD, METHODS
from facemask_tools.build_engine.int8 import DEFAULT_EXCLUDE, STEM


@click.command("export")
@click.option(
    "--checkpoint",
    "checkpoint",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Training checkpoint (.pt) with weights and model spec.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="ONNX file to write.")
@click.option("--dynamic-batch", is_flag=True, help="Make the batch axis dynamic (default: static batch 1).")
@click.option(
    "--dynamic-size",
    is_flag=True,
    help="Make height and width dynamic: one file for every input size that is a multiple of 128 "
    "(Detector(input_size=...), detect --input-size); checked against PyTorch at 512, 640 and 768.",
)
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset version.")
@click.option(
    "--parity-image",
    "parity_images",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Image for the PyTorch/ONNX Runtime parity check (repeatable; default: samples/images).",
)
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
def export(
    checkpoint: Path,
    out: Path,
    dynamic_batch: bool,
    dynamic_size: bool,
    opset: int,
    parity_images: tuple[Path, ...],
    force: bool,
) -> None:
    """Export CHECKPOINT's network to ONNX (logits + box codes, metadata inside) and check it."""
    if out.exists() and not force:  # before loading torch, so the refusal is instant
        raise FacemaskError(f"{out} already exists; pass --force to overwrite it or choose another --out")
    from facemask_tools.build_engine.export import export_onnx

    report = export_onnx(
        checkpoint,
        out,
        dynamic_batch=dynamic_batch,
        opset=opset,
        parity_images=list(parity_images) or None,
        overwrite=force,
        dynamic_size=dynamic_size,
    )
    for line in report.lines():
        click.echo(line)


@click.command("build-engine")
@click.option(
    "--onnx",
    "onnx_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="FP32 ONNX export (or an already converted FP16/INT8 one). Default: the shipped model.",
)
@click.option("--fp16", is_flag=True, help="FP16 graph, FP32 I/O (the default when no precision is given).")
@click.option("--int8", is_flag=True, help="INT8 Q/DQ graph from calibration.")
@click.option("--fp32", is_flag=True, help="No conversion: an FP32 engine.")
@click.option(
    "--calib-data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="VOC dataset (its train split) or folder of images for INT8 calibration. "
    "Default: ../shared/datasets/face-mask-detection if present, else samples/images.",
)
@click.option(
    "--calib-images",
    type=click.IntRange(min=1),
    default=DEFAULT_CALIB_IMAGES,
    show_default=True,
    help="How many calibration images (spread evenly over the split).",
)
@click.option(
    "--calib-method",
    type=click.Choice(METHODS),
    default=DEFAULT_METHOD,
    show_default=True,
    help="INT8 calibration method (results are cached).",
)
@click.option(
    "--int8-float",
    type=click.Choice(["fp16", "fp32"]),
    default="fp16",
    show_default=True,
    help="Type of the layers INT8 leaves in float: fp16 for TensorRT (ModelOpt's choice), fp32 for "
    "ONNX Runtime on CPU (its CPU provider re-quantises float biases of an FP16 graph and loses accuracy).",
)
@click.option(
    "--int8-exclude",
    multiple=True,
    default=DEFAULT_EXCLUDE,
    show_default=True,
    metavar="NODE",
    help=f"Leave this in float: an ONNX node name, an op type, '{STEM}' (the first Conv) or a module "
    "prefix ending in '/' (its Convs). Repeatable; replaces the default, 'none' quantises every Conv and "
    "Add. The default, the stem and the backbone's first stage (3 Convs), measured: -1.5 pt mAP "
    "instead of -5.2 for every Conv in INT8.",
)
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Static batch size (default 1).")
@click.option(
    "--dynamic-batch",
    default=None,
    metavar="MIN,OPT,MAX",
    help="Optimisation profile for a dynamic-batch ONNX (export --dynamic-batch).",
)
@click.option(
    "--input-size",
    type=int,
    default=None,
    help="Side of the engine's input (a multiple of 128) from a --dynamic-size ONNX, as the shipped one: "
    "512 or 640 for speed, 768 (trained) for small faces. Recorded in the sidecar. Default: the trained size.",
)
@click.option(
    "--workspace-gb",
    type=float,
    default=None,
    help="TensorRT workspace memory limit. Default: half the free GPU memory, at most 2 GiB.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Engine file (.engine), or the precision ONNX (.onnx). Default: beside --onnx.",
)
@click.option("--onnx-only", is_flag=True, help="Stop after the precision ONNX (no TensorRT needed).")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
def build_engine(
    onnx_path: Path | None,
    fp16: bool,
    int8: bool,
    fp32: bool,
    calib_data: Path | None,
    calib_images: int,
    calib_method: str,
    int8_float: str,
    int8_exclude: tuple[str, ...],
    batch: int | None,
    dynamic_batch: str | None,
    input_size: int | None,
    workspace_gb: float | None,
    out: Path | None,
    onnx_only: bool,
    force: bool,
) -> None:
    """Write the FP16/INT8 ONNX variant, then build a TensorRT engine and its JSON sidecar."""
    from facemask_tools.build_engine.builder import Int8Options, build
    from facemask_tools.build_engine.tensorrt_build import BatchProfile

    chosen = [name for name, flag in (("fp16", fp16), ("int8", int8), ("fp32", fp32)) if flag]
    if len(chosen) > 1:
        raise FacemaskError(f"choose one precision: {' and '.join('--' + c for c in chosen)} conflict")
    precision = chosen[0] if chosen else "fp16"
    if batch is not None and dynamic_batch is not None:
        raise FacemaskError("use either --batch N or --dynamic-batch MIN,OPT,MAX, not both")
    profile = BatchProfile.parse(dynamic_batch) if dynamic_batch else BatchProfile.static(batch or 1)
    build(
        onnx=onnx_path,
        precision=precision,
        int8=Int8Options(
            calib_data=calib_data,
            calib_images=calib_images,
            method=calib_method,
            float_type=int8_float,
            exclude=_exclude_list(int8_exclude),
        ),
        batch=profile,
        workspace_gb=workspace_gb,
        out=out,
        onnx_only=onnx_only,
        force=force,
        echo=click.echo,
        input_size=input_size,
    )


def _exclude_list(entries: tuple[str, ...]) -> tuple[str, ...]:
    if "none" in entries:
        if len(entries) > 1:
            raise FacemaskError("--int8-exclude none quantises everything; it cannot be combined with other nodes")
        return ()
    return entries
