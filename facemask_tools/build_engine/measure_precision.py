"""Val mAP of the FP32, FP16 and INT8 variants on CPU with ONNX Runtime: the figures behind the
choice of converter and calibration method.

    facemask-sdk dev measure-precision --checkpoint runs/ref-lite0-384/best.pt \\
        --data ../shared/datasets/face-mask-detection --workdir /tmp/facemask-precision

Rows:
- `fp32`: the exported ONNX.
- `fp16 (ORT CPU)`: the FP16 file as ONNX Runtime's CPU provider runs it. It has no FP16 kernel for
  Conv/Clip/Pad/MaxPool/Resize/ReduceSum/Add and runs them in FP32, removing the FP16 round trips
  between consecutive such ops: FP16 weights, mostly FP32 activations (optimistic).
- `fp16 (emulated)`: `facemask_tools.build_engine.fp16.emulate_fp16`, every tensor that is FP16 in the file rounded
  to FP16, FP32 arithmetic inside each op: how FP16 storage with FP32 accumulation behaves (TensorRT).
- `int8 <method>`: the Q/DQ file as `build-engine --int8` writes it (the stem conv in float,
  `int8.DEFAULT_EXCLUDE`); ONNX Runtime runs Q/DQ as quantise-dequantise around FP32 ops,
  numerically what an INT8 kernel with INT32 accumulation computes. With `--high-precision fp16`
  (the default, as `build-engine --int8` writes it) the FP16 part is measured through
  `emulate_fp16` like the FP16 row. The same file run as is by ONNX Runtime's CPU provider is shown
  once: ORT's `WeightBiasQuantization` transformer re-quantises the float Conv biases to INT32 with
  an FP16 scale (input scale x weight scale) and loses accuracy there; TensorRT keeps biases float.
- `--sensitivity` adds INT8 rows with one group of layers (stem, backbone stages, BiFPN, heads) left
  in float and everything else quantised (the stem too), to find the layers that cost accuracy.
- `--modelopt-python PY` adds NVIDIA ModelOpt ONNX PTQ rows (`max`, `entropy`; every layer
  quantised, so compare them with the sensitivity row "nothing"; same calibration images, FP32 high
  precision, CPU calibration), run by the interpreter `PY` of an environment with `nvidia-modelopt[onnx]`
  (it pins onnx/onnxruntime versions this project's environment does not use, so it lives in its own
  virtual environment).

Besides mAP (noisy for a weak model on 170 images), each row gets the mean |difference| from FP32 of
the scores (sigmoid of the logits) and box codes of the 1000 top-scoring anchors per image, on the
first 32 val images: a steadier measure of what a variant changes.

The detector is `facemask_sdk.Detector` (the SDK's own pre- and post-processing) with score
threshold 0.001 and 100 detections per image, as `facemask-sdk eval`; the metric is
`facemask_sdk.metrics` (pycocotools).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import click
import numpy as np
import onnx

from facemask_sdk.backends.onnxrt import OnnxRuntimeRunner
from facemask_sdk.detector import Detector
from facemask_sdk.image_io import read_image
from facemask_sdk.metrics import EVAL_MAX_DETECTIONS, EVAL_SCORE_THRESHOLD, evaluate_detections
from facemask_sdk.preprocess import preprocess
from facemask_sdk.voc import VocDataset
from facemask_tools.build_engine.builder import DEFAULT_CALIB_DATA, calibration_images
from facemask_tools.build_engine.fp16 import emulate_fp16, to_fp16
from facemask_tools.build_engine.int8 import METHODS, STEM, to_int8
from facemask_tools.build_engine.precision import load_model, metadata, model_spec, set_metadata
from facemask_tools.options import comma_separated
from facemask_tools.paths import DATASET_HELP

EARLY_BLOCKS = [STEM, *(f"/network/backbone/blocks.{i}/" for i in range(3))]
SENSITIVITY_GROUPS = {  # `to_int8` exclude entries: module prefixes ending in "/" name their Convs
    "nothing": [],
    "stem (first conv)": [STEM],
    "stem + backbone stage 1": EARLY_BLOCKS[:2],
    "stem + backbone stages 1-2": EARLY_BLOCKS[:3],
    "stem + backbone stages 1-3": EARLY_BLOCKS[:4],
    "backbone": ["/network/backbone/"],
    "BiFPN": ["/network/fpn/"],
    "class head": ["/network/class_net/"],
    "box head": ["/network/box_net/"],
    "head predict convs": ["/network/class_net/predict/", "/network/box_net/predict/"],
}


def raw_outputs(model: Path, inputs: list[np.ndarray], threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The network's logits and boxes for pre-processed inputs, through the SDK's ONNX Runtime runner
    (so with the session settings every runtime figure uses)."""
    with OnnxRuntimeRunner(model, providers=["CPUExecutionProvider"], threads=threads) as runner:
        outputs = [runner.run(x) for x in inputs]
    return np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs])


def output_error(actual: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray]) -> dict:
    """Mean |difference| of logits and box codes against FP32, and of the top-1000 anchors' scores."""
    logits, boxes = actual
    ref_logits, ref_boxes = reference
    top = np.argsort(ref_logits.max(axis=2), axis=1)[:, -1000:]  # the anchors that make detections
    rows = np.arange(len(top))[:, None]
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    return {
        "logits_mae": float(np.abs(logits - ref_logits).mean()),
        "boxes_mae": float(np.abs(boxes - ref_boxes).mean()),
        "top_score_mae": float(np.abs(sigmoid(logits[rows, top]) - sigmoid(ref_logits[rows, top])).mean()),
        "top_boxes_mae": float(np.abs(boxes[rows, top] - ref_boxes[rows, top]).mean()),
    }


def evaluate_onnx(model: Path, records, threads: int | None = None) -> dict:
    """COCO mAP of one ONNX model over `records` through the SDK's Detector."""
    predictions = []
    started = time.perf_counter()
    with Detector(
        model, score_threshold=EVAL_SCORE_THRESHOLD, max_detections=EVAL_MAX_DETECTIONS, threads=threads
    ) as detector:
        for record in records:
            detections = detector(record.load())
            predictions.append(detections)
        classes = detector.spec.classes
    ground_truth = [r.ground_truth() for r in records]
    result = evaluate_detections(ground_truth, predictions, classes)
    result["seconds"] = time.perf_counter() - started
    return result


MODELOPT_SCRIPT = """
import json, sys
import numpy as np
import modelopt.onnx.quantization as moq
job = json.load(open(sys.argv[1]))
moq.quantize(job["onnx"], quantize_mode="int8", calibration_data=np.load(job["data"]),
             calibration_method=job["method"], calibration_eps=["cpu"], high_precision_dtype="fp32",
             output_path=job["out"])
"""


def modelopt_int8(python: str, fp32: Path, out: Path, images: list[Path], method: str, workdir: Path) -> Path:
    """INT8 Q/DQ by NVIDIA ModelOpt in another interpreter; our metadata copied in for the Detector."""
    model = load_model(fp32)
    spec = model_spec(model, fp32)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        data = Path(tmp) / "calibration.npy"
        np.save(data, np.stack([preprocess(read_image(p), spec)[0] for p in images]))
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"onnx": str(fp32), "data": str(data), "method": method, "out": str(out)}))
        subprocess.run([python, "-c", MODELOPT_SCRIPT, str(job)], check=True, capture_output=True, text=True)
    quantized = onnx.load(str(out))
    set_metadata(quantized, {**metadata(model), "precision": "int8", "quantizer": f"modelopt {method}"})
    onnx.save(quantized, str(out))
    return out


def emulated_if_fp16(report) -> Path:
    """An INT8 model whose non-INT8 part is FP16 is measured through `emulate_fp16` (see module docs)."""
    if report.high_precision != "fp16":
        return report.path
    emulated = report.path.with_name(report.path.stem + ".emulated.onnx")
    onnx.save(emulate_fp16(onnx.load(str(report.path))), str(emulated))
    return emulated


def measure(
    fp32: Path | None,
    checkpoint: Path | None = None,
    data: Path = DEFAULT_CALIB_DATA,
    workdir: Path = Path("/tmp/facemask-precision"),
    calib_images: int = 256,
    methods: Sequence[str] = METHODS,
    split: str = "val",
    max_images: int | None = None,
    sensitivity: str | None = None,
    groups: Sequence[str] = tuple(SENSITIVITY_GROUPS),
    skip: Sequence[str] = (),
    threads: int | None = None,
    error_images: int = 32,
    op_types: Sequence[str] = ("Conv", "Add"),
    high_precision: str = "fp16",
    modelopt_python: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Every row of the module docs for the FP32 ONNX `fp32` (or `checkpoint` exported into `workdir` first);
    prints each row as it is measured, then a Markdown table; writes and returns `workdir/results.json`."""
    work = workdir
    work.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        from facemask_tools.build_engine.export import export_onnx

        fp32 = work / "model.onnx"
        export_onnx(checkpoint, fp32, overwrite=True)
    records = VocDataset(data, split).records[:max_images]
    calib = calibration_images(data, calib_images)
    skip = set(skip)
    rows: dict[str, dict] = {}
    spec = model_spec(load_model(fp32), fp32)
    probe = [preprocess(r.load(), spec)[0][None] for r in records[:error_images]]
    reference = raw_outputs(fp32, probe, threads)

    def run(name: str, path: Path, note: str = "") -> None:
        result = evaluate_onnx(path, records, threads)
        result.update(output_error(raw_outputs(path, probe, threads), reference))
        result["note"] = note
        rows[name] = result
        log(
            f"{name:44s} mAP {100 * result['map']:6.2f}  mAP50 {100 * result['map50']:6.2f}  "
            f"top-score MAE {result['top_score_mae']:.4f}  top-box MAE {result['top_boxes_mae']:.4f}  "
            f"({result['seconds']:.0f} s) {note}"
        )

    run("fp32", fp32)
    if "fp16" not in skip or "fp16-emulated" not in skip:
        fp16 = to_fp16(fp32, work / "model.fp16.onnx", overwrite=True)
        if "fp16" not in skip:
            run("fp16 (ORT CPU)", fp16.path, fp16.lines()[0])
        if "fp16-emulated" not in skip:
            emulated = work / "model.fp16-emulated.onnx"
            onnx.save(emulate_fp16(onnx.load(str(fp16.path))), str(emulated))
            run("fp16 (emulated FP16 storage)", emulated)
    op_types = tuple(op_types)
    suffix = "" if op_types == ("Conv", "Add") else f" [{','.join(op_types)}]"
    for method in methods:
        report = to_int8(
            fp32,
            work / f"model.int8.{method}.onnx",
            calib,
            method=method,
            cache_dir=work / "cache",
            op_types=op_types,
            high_precision=high_precision,
            overwrite=True,
        )
        run(f"int8 {method}{suffix}", emulated_if_fp16(report), report.lines()[0])
        if report.high_precision == "fp16" and method == methods[0]:
            run(f"int8 {method}{suffix} (file on ORT CPU as is)", report.path, "ORT WeightBiasQuantization in FP16")
    if modelopt_python:
        for method in ("max", "entropy"):
            started = time.perf_counter()
            path = modelopt_int8(
                modelopt_python, fp32, work / f"model.int8.modelopt-{method}.onnx", calib, method, work
            )
            run(f"int8 ModelOpt {method}", path, f"quantised in {time.perf_counter() - started:.0f} s")
    if sensitivity:
        for group in groups:
            report = to_int8(
                fp32,
                work / "model.int8.sensitivity.onnx",
                calib,
                method=sensitivity,
                cache_dir=work / "cache",
                exclude=SENSITIVITY_GROUPS[group],
                op_types=op_types,
                high_precision=high_precision,
                overwrite=True,
            )
            run(
                f"int8 {sensitivity}, {group} in float",
                emulated_if_fp16(report),
                f"{len(report.excluded)} Conv excluded",
            )

    summary = {
        "onnx": str(fp32),
        "split": split,
        "images": len(records),
        "calibration_images": len(calib),
        "rows": {
            name: {k: v for k, v in row.items() if k not in ("ap50_per_class", "images", "ground_truth_boxes")}
            for name, row in rows.items()
        },
    }
    (work / "results.json").write_text(json.dumps(summary, indent=1))
    log("")
    log("| variant | mAP@[.5:.95] | Δ vs FP32 | mAP@.5 | top-1000 score MAE | top-1000 box-code MAE |")
    log("|---|---:|---:|---:|---:|---:|")
    base = rows["fp32"]["map"]
    for name, row in rows.items():
        log(
            f"| {name} | {100 * row['map']:.2f} | {100 * (row['map'] - base):+.2f} | {100 * row['map50']:.2f} "
            f"| {row['top_score_mae']:.4f} | {row['top_boxes_mae']:.4f} |"
        )
    return summary


@click.command("measure-precision", help=__doc__.split("\n\n")[0])
@click.option(
    "--checkpoint", type=click.Path(dir_okay=False, path_type=Path), help="Training checkpoint to export first."
)
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False, path_type=Path), help="An FP32 ONNX export.")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=DEFAULT_CALIB_DATA,
    show_default=DATASET_HELP,
    help="VOC dataset (train: calibration, val: mAP).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/tmp/facemask-precision"),
    show_default=True,
)
@click.option("--calib-images", type=int, default=256, show_default=True)
@click.option(
    "--methods",
    default=",".join(METHODS),
    show_default=True,
    metavar="METHODS",
    callback=comma_separated(choices=METHODS, what="calibration method"),
    help="INT8 calibration methods to compare.",
)
@click.option(
    "--split",
    type=click.Choice(["val", "train", "all"]),
    default="val",
    show_default=True,
    help="Split to measure mAP on.",
)
@click.option("--max-images", type=int, default=None, help="Evaluate on the first N images only.")
@click.option(
    "--sensitivity",
    type=click.Choice(METHODS),
    default=None,
    metavar="METHOD",
    help="Per-group INT8 sensitivity with METHOD.",
)
@click.option(
    "--groups",
    default=",".join(SENSITIVITY_GROUPS),
    show_default="every group",
    metavar="GROUPS",
    callback=comma_separated(choices=SENSITIVITY_GROUPS, what="sensitivity group"),
    help="With --sensitivity: the groups to run (comma-separated).",
)
@click.option(
    "--skip",
    default="",
    metavar="ROWS",
    callback=comma_separated(choices=("fp16", "fp16-emulated"), what="row"),
    help="Comma-separated rows to skip: fp16,fp16-emulated.",
)
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads.")
@click.option(
    "--error-images", type=int, default=32, show_default=True, help="Val images for the output-error columns."
)
@click.option(
    "--op-types",
    default="Conv,Add",
    metavar="OPS",
    show_default=True,
    callback=comma_separated(),
    help="Op types whose inputs get Q/DQ (ours).",
)
@click.option(
    "--high-precision",
    type=click.Choice(["fp16", "fp32"]),
    default="fp16",
    show_default=True,
    help="Type of the non-INT8 part.",
)
@click.option("--modelopt-python", default=None, help="Python of a venv with nvidia-modelopt[onnx].")
def main(checkpoint: Path | None, onnx_path: Path | None, **options) -> None:
    if (checkpoint is None) == (onnx_path is None):
        raise click.UsageError("give exactly one of --checkpoint (a training checkpoint) and --onnx (an FP32 export)")
    measure(onnx_path, checkpoint=checkpoint, log=lambda line: click.echo(line), **options)
