"""A class-logit offset folded into the class head's bias: a prior correction that needs no training.

    facemask-sdk dev class-offset runs/stageV-last.pt --data runs/closeups-train --out runs/stageW.pt

The recipe oversamples `mask_weared_incorrect` three ways (repeat factor, copy-paste, zoom-balance), so the
network's logit for it carries a prior above the class's share of real faces, and a face it cannot resolve
(a blurred close-up) goes to that class. Subtracting a constant from one class's logits is the standard
post-hoc correction (logit adjustment). A constant added to one class's logit at every anchor is the same
constant added to the bias of that class's channels in the head's last convolution, so every backend
(PyTorch, ONNX, TensorRT) gets it from the weights, with no code of its own.

The command runs the network once over the data, keeps the head outputs, redoes the runtime's
post-processing and the metrics for each offset, prints one row per offset, and with `--out` writes the
checkpoint with the offset whose right-class share over all faces is highest (ties: the smallest change).
Choose it on training data (the close-up view of the train split), never on the set whose figures you quote.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np
import torch

from facemask_sdk.anchors import generate_anchors
from facemask_sdk.detections import Detections
from facemask_sdk.errors import FacemaskError, ModelFileError
from facemask_sdk.metrics import evaluation_config
from facemask_sdk.postprocess import postprocess
from facemask_sdk.preprocess import Letterbox
from facemask_sdk.spec import ModelSpec
from facemask_tools.paths import DATASET, DATASET_HELP
from facemask_tools.training.checkpoint import read_checkpoint, save_checkpoint
from facemask_tools.training.cli import choose_allocator, malloc_option
from facemask_tools.training.trainer import RARE_CLASS

DEFAULT_OFFSETS = (-3.0, -2.0, -1.5, -1.0, -0.5, 0.0)
KEPT = ("spec", "train_config", "code_version")
"""What the offset checkpoint keeps of its source; its val metrics describe the source's weights, not these."""


def class_bias_key(state_dict: dict[str, torch.Tensor], num_anchors: int, num_classes: int) -> str:
    """The bias of the class head's last convolution: `num_anchors * num_classes` channels, class fastest
    (effdet's flattening, `FlatHeads`)."""
    keys = [
        key
        for key, tensor in state_dict.items()
        if key.startswith("class_net.predict.")
        and key.endswith(".bias")
        and tensor.numel() == num_anchors * num_classes
    ]
    if len(keys) != 1:
        raise ModelFileError(f"found no single class-head bias of {num_anchors * num_classes} channels (found {keys})")
    return keys[0]


def offset_class_bias(state_dict: dict[str, torch.Tensor], spec: ModelSpec, offsets: dict[str, float]) -> dict:
    """A copy of `state_dict` whose class logits are shifted by `offsets` (class name -> logit offset)."""
    num_classes = len(spec.classes)
    key = class_bias_key(state_dict, spec.anchors.anchors_per_location, num_classes)
    bias = state_dict[key].clone()
    for name, offset in offsets.items():
        bias[spec.classes.index(name) :: num_classes] += offset
    return {**state_dict, key: bias}


def predictions_with_offsets(
    outputs: Sequence[tuple[np.ndarray, np.ndarray, Letterbox]],
    spec: ModelSpec,
    offsets: dict[str, float],
) -> list[Detections]:
    """The runtime's post-processing of stored head outputs, `offsets` added to the class logits first:
    the same detections as the offset checkpoint gives."""
    anchors = generate_anchors(spec)
    config = evaluation_config()
    shift = np.zeros(len(spec.classes), np.float32)
    for name, offset in offsets.items():
        shift[spec.classes.index(name)] = offset
    predictions = []
    for logits, box_codes, letterbox in outputs:
        found = postprocess(logits + shift, box_codes, anchors, letterbox, config)
        predictions.append(Detections(*found, spec.classes))
    return predictions


def right_class_share(by_size: dict) -> float:
    """Faces found with the right class over all labelled faces, every size bucket together."""
    faces = sum(row["faces"] for row in by_size["buckets"].values())
    return sum(row["right_class"] for row in by_size["buckets"].values()) / max(faces, 1)


def best_offset(rows: dict[float, dict]) -> float:
    """The offset of the highest right-class share over all faces; ties go to the smallest change."""
    return max(rows, key=lambda offset: (round(right_class_share(rows[offset]["by_size"]), 6), -abs(offset)))


def write_offset_checkpoint(
    source: Path, target: Path, class_name: str, offset: float, chosen_on: str, overwrite: bool = False
) -> Path:
    """`source`'s weights with `offset` added to `class_name`'s logits; the offsets so far are recorded
    under `class_logit_offsets` (they add up over repeated use)."""
    payload = read_checkpoint(source)
    if payload.get("ema"):
        raise FacemaskError(f"{source} is a resume checkpoint: ship its EMA first (facemask-sdk dev ship)")
    spec = ModelSpec.from_dict(payload["spec"])
    offsets = dict(payload.get("class_logit_offsets") or {})
    offsets[class_name] = offsets.get(class_name, 0.0) + offset
    result = {key: payload[key] for key in KEPT if key in payload}
    result["state_dict"] = offset_class_bias(payload["state_dict"], spec, {class_name: offset})
    result["class_logit_offsets"] = offsets
    result["init"] = {
        "kind": "class_offset",
        "source": str(source),
        "source_init": payload.get("init"),
        "class": class_name,
        "offset": offset,
        "chosen_on": chosen_on,
    }
    return save_checkpoint(target, result, overwrite=overwrite)


def _offsets(value: str) -> tuple[float, ...]:
    try:
        offsets = tuple(float(part) for part in value.replace(" ", "").split(",") if part)
    except ValueError:
        raise click.BadParameter(f"expected logit offsets like -2,-1,0, got {value!r}") from None
    if not offsets or not all(np.isfinite(offsets)):
        raise click.BadParameter(f"expected finite logit offsets like -2,-1,0, got {value!r}")
    return offsets


@click.command("class-offset")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", default=str(DATASET), show_default=DATASET_HELP, help="VOC folder to choose the offset on.")
@click.option(
    "--split",
    type=click.Choice(["train", "val", "all"]),
    default=None,
    help="Default: train where the folder has splits/train.txt, else all of it.",
)
@click.option("--class", "class_name", default=RARE_CLASS, show_default=True, help="The class whose logits move.")
@click.option(
    "--offsets",
    default=",".join(f"{offset:g}" for offset in DEFAULT_OFFSETS),
    show_default=True,
    help="Logit offsets to measure (comma-separated).",
)
@click.option("--iou", "iou_threshold", type=float, default=None, help="Match faces at this IoU (default 0.5).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the checkpoint with the best offset here (default: measure only).",
)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@malloc_option
def main(
    checkpoint: Path,
    data: str,
    split: str | None,
    class_name: str,
    offsets: str,
    iou_threshold: float | None,
    out: Path | None,
    force: bool,
    batch_size: int,
    malloc: str,
) -> None:
    """Measure logit offsets for one class on a dataset (mAP, right-class share by face size) and, with
    --out, write CHECKPOINT with the best of them folded into the class head's bias."""
    from facemask_sdk.voc import VocDataset
    from facemask_tools.training.checkpoint import load_network
    from facemask_tools.training.evaluate import head_outputs, score_predictions

    candidates = _offsets(offsets)
    choose_allocator(malloc)
    if iou_threshold is not None and not 0.0 < iou_threshold < 1.0:
        raise FacemaskError(f"--iou must lie between 0 and 1, not {iou_threshold}")
    if out is not None and out.resolve() == checkpoint.resolve():
        raise FacemaskError(f"the output {out} is the checkpoint itself; choose another path")
    if out is not None and out.exists() and not force:
        raise FacemaskError(f"{out} exists; pass --force to overwrite or choose another --out")
    network, spec, payload = load_network(checkpoint)
    if class_name not in spec.classes:
        raise FacemaskError(f"--class {class_name!r} is not one of this model's classes {list(spec.classes)}")
    split = split or ("train" if (Path(data) / "splits" / "train.txt").is_file() else "all")
    train_config = payload.get("train_config") or {}
    dataset = VocDataset(data, split, spec.classes, train_config.get("val_fraction", 0.2), train_config.get("seed", 0))
    for problem in dataset.report.skipped:
        click.echo(f"data: {problem}")
    outputs = list(head_outputs(network, spec, dataset.records, batch_size))
    rows = {}
    for offset in candidates:
        predictions = predictions_with_offsets(outputs, spec, {class_name: offset})
        rows[offset] = score_predictions(dataset.records, predictions, spec.classes, iou_threshold)
    buckets = list(next(iter(rows.values()))["by_size"]["buckets"])
    click.echo(f"{data} ({split}): {len(dataset.records)} images; offset added to the logits of {class_name}")
    click.echo("| offset | mAP | mAP@.5 | right class, all faces | " + " | ".join(buckets) + " |")
    click.echo("|---:" * (4 + len(buckets)) + "|")
    for offset, metrics in rows.items():
        shares = [metrics["by_size"]["buckets"][name]["right_class_share"] for name in buckets]
        cells = " | ".join("" if share is None else f"{share:.2f}" for share in shares)
        click.echo(
            f"| {offset:g} | {metrics['map']:.4f} | {metrics['map50']:.4f} | "
            f"{right_class_share(metrics['by_size']):.3f} | {cells} |"
        )
    chosen = best_offset(rows)
    click.echo(f"best offset: {chosen:g}")
    if out is not None:
        written = write_offset_checkpoint(
            checkpoint, out, class_name, chosen, chosen_on=f"{data} ({split})", overwrite=force
        )
        click.echo(f"wrote {written}: {class_name} logits {chosen:+g}")
