"""Checkpoint -> ONNX: the bare network (no anchors, no NMS), simplified, checked, with its metadata.

The graph is `facemask_tools.training.model.FlatHeads`: input `images` float32 `[1, 3, H, W]` (letterboxed and
normalised by `facemask_sdk.preprocess`; the batch axis is dynamic with `dynamic_batch=True`, height and
width with `dynamic_size=True`: then one file serves every input size that is a multiple of 128), outputs
`logits` `[B, A, C]` (pre-sigmoid) and `boxes` `[B, A, 4]` (effdet's `(ty, tx, th, tw)` codes) in
effdet's anchor order. Everything the runtime needs travels in `metadata_props`: the `ModelSpec` as
JSON under `facemask_sdk.spec` plus readable copies (classes, input size, mean/std, anchors, ...).

Before anything is written, ONNX Runtime's outputs are compared with PyTorch's on real images; a
mismatch above `tolerance` is a bug and nothing is written. The file appears atomically.

    >>> report = export_onnx(Path("runs/train/exp1/best.pt"), Path("models/facemask.onnx"))
    >>> report.max_abs_diff_logits, report.max_abs_diff_boxes
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import onnxslim
import torch

import facemask_sdk
from facemask_sdk.errors import FacemaskError, InternalError
from facemask_sdk.files import write_atomically
from facemask_sdk.image_io import IMAGE_SUFFIXES, read_image
from facemask_sdk.preprocess import preprocess
from facemask_sdk.spec import INPUT_NAME, METADATA_KEY, OUTPUT_NAMES, ModelSpec
from facemask_tools.paths import SAMPLES
from facemask_tools.training.checkpoint import load_network, network_of
from facemask_tools.training.model import FlatHeads, make_size_agnostic

DEFAULT_OPSET = 17
DYNAMIC_SIZE_CHECKS = (512, 640, 768)
"""Input sizes at which a dynamic-size export is compared with PyTorch (besides the trained size)."""
DEFAULT_TOLERANCE = 1e-3
SAMPLES_DIR = SAMPLES / "images"
"""Where the parity images come from when none are given (the repository's CC0 samples)."""


class ExportParityError(InternalError):
    """ONNX Runtime and PyTorch disagree on the exported graph: a bug in the export, not user input."""


@dataclass(frozen=True)
class ExportReport:
    """What `export_onnx` wrote and how closely ONNX Runtime matches PyTorch on the parity images."""

    path: Path
    checkpoint: Path
    spec: ModelSpec
    opset: int
    dynamic_batch: bool
    num_anchors: int
    nodes_exported: int
    nodes_simplified: int
    size_bytes: int
    parity_images: tuple[str, ...]
    max_abs_diff_logits: float
    max_abs_diff_boxes: float
    seconds: float
    metadata: dict[str, str] = field(default_factory=dict)
    other_sizes: dict[int, tuple[float, float]] = field(default_factory=dict)
    """With `dynamic_size`: max |diff| (logits, boxes) against PyTorch at each other input size checked."""

    @property
    def dynamic_size(self) -> bool:
        return bool(self.other_sizes)

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line (what the CLI prints)."""
        h, w = self.spec.image_size
        batch = "dynamic" if self.dynamic_batch else "1"
        sizes = (
            [
                f"dynamic input size (multiples of 128; trained at {h}); parity at "
                + ", ".join(
                    f"{size} px {logits:.3g} / {boxes:.3g}"
                    for size, (logits, boxes) in sorted(self.other_sizes.items())
                )
            ]
            if self.other_sizes
            else []
        )
        return sizes + [
            f"wrote {self.path} ({self.size_bytes / 1e6:.1f} MB) in {self.seconds:.1f} s",
            f"model: {self.spec.architecture}, input images [{batch}, 3, {'H, W' if self.other_sizes else f'{h}, {w}'}] "
            f"float32, outputs logits [{batch}, {self.num_anchors}, {self.spec.num_classes}], "
            f"boxes [{batch}, {self.num_anchors}, 4]{f' at {h} px' if self.other_sizes else ''}, opset {self.opset}",
            f"graph: {self.nodes_exported} nodes exported, {self.nodes_simplified} after onnxslim; onnx.checker passed",
            f"parity vs PyTorch on {len(self.parity_images)} image(s) ({', '.join(self.parity_images)}): "
            f"max |diff| logits {self.max_abs_diff_logits:.3g}, boxes {self.max_abs_diff_boxes:.3g}",
        ]


def export_onnx(
    checkpoint: Path,
    out: Path,
    dynamic_batch: bool = False,
    opset: int = DEFAULT_OPSET,
    parity_images: list[Path] | None = None,
    overwrite: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    dynamic_size: bool = False,
    size_checks: tuple[int, ...] = DYNAMIC_SIZE_CHECKS,
) -> ExportReport:
    """Export a training checkpoint to `out` (an `.onnx` path); see the module docs.

    `dynamic_size`: height and width dynamic (the BiFPN made size-agnostic first,
    `training.model.make_size_agnostic`); parity is then also checked at `size_checks`, each against
    PyTorch's network built for that size.

    `parity_images` default to the repository's `samples/images`. Raises `FacemaskError` if `out`
    exists (unless `overwrite`), `FileNotFoundError`/`ModelFileError` for a bad checkpoint and
    `ExportParityError` if ONNX Runtime and PyTorch differ by more than `tolerance`.
    """
    started = time.perf_counter()
    checkpoint, out = Path(checkpoint), Path(out)
    if out.suffix.lower() != ".onnx":
        raise FacemaskError(f"the output must be an .onnx file, got {out}")
    if out.exists() and not overwrite:
        raise FacemaskError(f"{out} already exists; pass overwrite=True (--force) or choose another path")
    if out.exists() and not out.is_file():
        raise FacemaskError(f"{out} exists and is not a file")
    images = _parity_inputs(parity_images)

    network, spec, payload = load_network(checkpoint)
    if dynamic_size:
        make_size_agnostic(network)
    heads = FlatHeads(network).eval()  # eval() on the wrapper: export restores its mode afterwards
    model = _trace(heads, spec, dynamic_batch, opset, dynamic_size)
    nodes_exported = len(model.graph.node)
    model = onnxslim.slim(model)
    nodes_simplified = len(model.graph.node)

    inputs = np.stack([preprocess(image, spec)[0] for _, image in images])
    expected = _torch_outputs(heads, inputs)
    num_anchors = int(expected[0].shape[1])
    _set_output_shapes(model, None if dynamic_size else num_anchors, spec.num_classes)
    metadata = _metadata(spec, payload, checkpoint)
    _set_metadata(model, metadata)
    onnx.checker.check_model(model, full_check=True)

    data = model.SerializeToString()
    actual = _onnxruntime_outputs(data, inputs, dynamic_batch)
    diff_logits = float(np.max(np.abs(actual[0] - expected[0])))
    diff_boxes = float(np.max(np.abs(actual[1] - expected[1])))
    if not (diff_logits <= tolerance and diff_boxes <= tolerance):  # also catches NaN
        raise ExportParityError(
            f"ONNX Runtime differs from PyTorch by {diff_logits:.3g} (logits) / {diff_boxes:.3g} (boxes), "
            f"more than the tolerance {tolerance:g}; nothing was written"
        )
    other_sizes = (
        _parity_at_other_sizes(data, spec, payload, images, dynamic_batch, tolerance, size_checks)
        if dynamic_size
        else {}
    )
    write_atomically(out, data, overwrite)
    return ExportReport(
        path=out,
        checkpoint=checkpoint,
        spec=spec,
        opset=opset,
        dynamic_batch=dynamic_batch,
        num_anchors=num_anchors,
        nodes_exported=nodes_exported,
        nodes_simplified=nodes_simplified,
        size_bytes=len(data),
        parity_images=tuple(name for name, _ in images),
        max_abs_diff_logits=diff_logits,
        max_abs_diff_boxes=diff_boxes,
        seconds=time.perf_counter() - started,
        metadata=metadata,
        other_sizes=other_sizes,
    )


def _parity_at_other_sizes(
    data: bytes,
    spec: ModelSpec,
    payload: dict,
    images: list,
    dynamic_batch: bool,
    tolerance: float,
    sizes: tuple[int, ...],
) -> dict[int, tuple[float, float]]:
    """Max |diff| of the dynamic-size graph against PyTorch's network built for each of `sizes` (the
    trained size is checked already); raises like the main check."""
    results = {}
    for size in sizes:
        if (size, size) == tuple(spec.image_size):
            continue
        sized = dataclasses.replace(spec, image_size=(size, size))
        reference = network_of(payload, sized, "the exported checkpoint")
        inputs = np.stack([preprocess(image, sized)[0] for _, image in images])
        expected = _torch_outputs(FlatHeads(reference).eval(), inputs)
        actual = _onnxruntime_outputs(data, inputs, dynamic_batch)
        diffs = tuple(float(np.max(np.abs(a - e))) for a, e in zip(actual, expected))
        if not all(d <= tolerance for d in diffs):
            raise ExportParityError(
                f"at {size} px ONNX Runtime differs from PyTorch by {diffs[0]:.3g} (logits) / {diffs[1]:.3g} "
                f"(boxes), more than the tolerance {tolerance:g}; nothing was written"
            )
        results[size] = diffs
    return results


def _parity_inputs(paths: list[Path] | None) -> list[tuple[str, np.ndarray]]:
    """(name, BGR image) pairs: the given files, else the shipped samples, else one synthetic image."""
    if paths is None:
        paths = sorted(p for p in SAMPLES_DIR.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            rng = np.random.default_rng(0)
            return [("synthetic noise 360x480", rng.integers(0, 256, (360, 480, 3), dtype=np.uint8))]
    if not paths:
        raise FacemaskError("parity_images is empty; give at least one image (or None for the samples)")
    return [(Path(p).name, read_image(p)) for p in paths]


def _trace(
    heads: FlatHeads, spec: ModelSpec, dynamic_batch: bool, opset: int, dynamic_size: bool = False
) -> onnx.ModelProto:
    """TorchScript-based export (dynamo=False) to an in-memory ModelProto."""
    dummy = torch.zeros((1, 3, *spec.image_size), dtype=torch.float32)
    axes: dict[str, dict[int, str]] = {name: {} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    for name in axes if dynamic_batch else ():
        axes[name][0] = "batch"
    if dynamic_size:
        axes[INPUT_NAME].update({2: "height", 3: "width"})
        for name in OUTPUT_NAMES:
            axes[name][1] = "anchors"
    dynamic_axes = {name: dims for name, dims in axes.items() if dims} or None
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # effdet's "same" padding branches on shapes; with a fixed input size the trace is exact, and
        # with a dynamic one every stride-2 input is even (sides are multiples of 128), so the padding
        # traced at the trained size is the padding at every size (the parity checks confirm it).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.onnx.export(
            heads,
            (dummy,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())


def _torch_outputs(heads: FlatHeads, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's logits and boxes, one image at a time (the reference)."""
    logits, boxes = [], []
    with torch.no_grad():
        for chw in inputs:
            out_logits, out_boxes = heads(torch.from_numpy(chw[None]))
            logits.append(out_logits.numpy())
            boxes.append(out_boxes.numpy())
    return np.concatenate(logits), np.concatenate(boxes)


def _onnxruntime_outputs(data: bytes, inputs: np.ndarray, dynamic_batch: bool) -> tuple[np.ndarray, np.ndarray]:
    """ONNX Runtime (CPU) outputs; a dynamic-batch model gets all images in one batch."""
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    batches = [inputs] if dynamic_batch else [chw[None] for chw in inputs]
    results = [session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch}) for batch in batches]
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


def _set_output_shapes(model: onnx.ModelProto, num_anchors: int | None, num_classes: int) -> None:
    """Write the static anchor and class dims into the output types (the trace leaves them symbolic);
    the anchor dim stays symbolic (`anchors`) when the input size is dynamic."""
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        last = num_classes if output.name == "logits" else 4
        for dim, value in zip(list(dims)[1:], (num_anchors, last)):
            if value is None:
                dim.ClearField("dim_value")
                dim.dim_param = "anchors"
                continue
            dim.ClearField("dim_param")
            dim.dim_value = value


def _metadata(spec: ModelSpec, payload: dict, checkpoint: Path) -> dict[str, str]:
    h, w = spec.image_size
    return {
        METADATA_KEY: spec.to_json(),
        "architecture": spec.architecture,
        "classes": json.dumps(list(spec.classes)),
        "input_size": f"{h}x{w}",
        "input": f"{INPUT_NAME}: float32 NCHW RGB, letterboxed top-left, (pixel - mean) / std",
        "outputs": "logits [B, A, C] pre-sigmoid; boxes [B, A, 4] effdet (ty, tx, th, tw) codes",
        "mean": json.dumps(list(spec.mean)),
        "std": json.dumps(list(spec.std)),
        "anchors": json.dumps(spec.to_dict()["anchors"]),
        "code_version": spec.code_version,
        "exporter_version": facemask_sdk.__version__,
        "checkpoint": checkpoint.name,
        "epoch": str(payload.get("epoch", "")),
        "metrics": json.dumps(payload.get("metrics", {}), default=str),
        # logit offsets already in the graph (class head bias / per-level constants): a record, not to apply again
        "logit_offsets": json.dumps(
            {
                "all_levels": payload.get("class_logit_offsets") or {},
                "by_level": payload.get("level_logit_offsets") or {},
            }
        ),
    }


def _set_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "facemask-sdk"
    model.producer_version = facemask_sdk.__version__
    model.doc_string = f"facemask-sdk {metadata['architecture']} face-mask detector; classes {metadata['classes']}"
