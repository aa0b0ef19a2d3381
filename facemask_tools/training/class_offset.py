"""A class-logit offset, for all anchors or for those of the top pyramid levels: a prior correction that
needs no training.

    facemask-sdk dev class-offset runs/stageV-last.pt --data runs/closeups-train --out runs/stageW.pt
    facemask-sdk dev class-offset CKPT --data runs/closeups-train --from-levels 3,6,7 --out runs/stageW2.pt

The recipe oversamples `mask_weared_incorrect` three ways (repeat factor, copy-paste, zoom-balance), so the
network's logit for it carries a prior above the class's share of real faces, and a face it cannot resolve
(a blurred close-up) goes to that class. Subtracting a constant from one class's logits is the standard
post-hoc correction (logit adjustment). For every level it is the same constant added to the bias of that
class's channels in the head's last convolution (`class_logit_offsets`); for the top levels only (large
faces: P6-P7 anchors are 160 px and more at 768 px) it is a constant added to those levels' class maps in the
network's forward (`level_logit_offsets`, `model.add_level_offsets`), because that convolution is shared by
every level. Either way every backend gets it from the checkpoint or the exported graph, with no code of its own.

The command runs the network once over the data, keeps the head outputs of the anchors that can yield a
detection, redoes the runtime's post-processing and the metrics for each (lowest level, offset) pair,
prints one row per pair, and with `--out` writes the checkpoint with the pair whose right-class share over
all faces is highest (ties: the smallest change, then the fewest levels). Choose it on training data (the
close-up view of the train split), never on the set whose figures you quote.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from facemask_sdk.errors import FacemaskError, ModelFileError
from facemask_tools.paths import DATASET, DATASET_HELP
from facemask_tools.training.cli import (
    check_iou,
    choose_allocator,
    default_split,
    malloc_option,
    open_dataset,
)
from facemask_tools.training.config import RARE_CLASS, TrainConfig

if TYPE_CHECKING:  # torch is imported after the allocator is chosen
    import torch

    from facemask_sdk.preprocess import Letterbox
    from facemask_sdk.spec import ModelSpec

DEFAULT_OFFSETS = (-3.0, -2.0, -1.5, -1.0, -0.5, 0.0)


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


def offset_class_bias(
    state_dict: dict[str, torch.Tensor], spec: ModelSpec, offsets: dict[str, float]
) -> dict[str, torch.Tensor]:
    """A copy of `state_dict` whose class logits are shifted by `offsets` (class name -> logit offset); the
    sum is taken in float32 and stored in the bias's own dtype."""
    from facemask_tools.training.model import class_channels

    key = class_bias_key(state_dict, spec.anchors.anchors_per_location, len(spec.classes))
    bias = state_dict[key].float().clone()
    for name, offset in offsets.items():
        bias[class_channels(spec, name)] += offset
    return {**state_dict, key: bias.to(state_dict[key].dtype)}


StoredOutputs = tuple[np.ndarray, np.ndarray, "Letterbox", np.ndarray, np.ndarray]
"""One image's head outputs on the anchors that can yield a detection: logits, box codes, letterbox, anchors
and their pyramid levels."""


def candidate_outputs(
    outputs: Iterable[tuple[np.ndarray, np.ndarray, Letterbox]], spec: ModelSpec, class_index: int
) -> Iterator[StoredOutputs]:
    """Each image's outputs on the anchors that can hold one of the post-processing's top-k candidates under
    any offset of class `class_index` per level: every other class's top k, and that class's top k of each
    level (an offset per level keeps the order within a level). The same detections as all anchors give, for a
    fraction of the memory (a 768 px image has 110,484 anchors), up to float32 rounding at the top-k boundary."""
    from facemask_sdk.anchors import anchor_levels, generate_anchors
    from facemask_sdk.metrics import evaluation_config
    from facemask_sdk.postprocess import top_k_indices

    anchors, levels = generate_anchors(spec), anchor_levels(spec)
    top_k = evaluation_config().top_k
    groups = [(np.arange(len(levels)), c) for c in range(len(spec.classes)) if c != class_index]
    groups += [(np.flatnonzero(levels == level), class_index) for level in np.unique(levels)]
    for logits, box_codes, letterbox in outputs:
        kept = np.zeros(len(logits), bool)
        for at, c in groups:
            ranked = np.nan_to_num(logits[at, c], nan=-np.inf)  # NaN is never a candidate
            kept[at[top_k_indices(ranked, top_k)]] = True
        yield logits[kept], box_codes[kept], letterbox, anchors[kept], levels[kept]


def shifted_outputs(
    stored: Iterable[StoredOutputs], class_index: int, from_level: int, offset: float
) -> Iterator[tuple[np.ndarray, np.ndarray, Letterbox, np.ndarray]]:
    """`stored` with `offset` added to class `class_index`'s logits at the anchors of `from_level` and up."""
    for logits, box_codes, letterbox, anchors, levels in stored:
        shifted = logits.copy()
        shifted[levels >= from_level, class_index] += np.float32(offset)
        yield shifted, box_codes, letterbox, anchors


def right_class_share(by_size: dict) -> float:
    """Faces found with the right class over all labelled faces, every size bucket together."""
    faces = sum(row["faces"] for row in by_size["buckets"].values())
    return sum(row["right_class"] for row in by_size["buckets"].values()) / max(faces, 1)


def best_choice(rows: dict[tuple[int, float], dict]) -> tuple[int, float]:
    """The (lowest level, offset) of the highest right-class share over all faces; ties go to the smallest
    change, then to the fewest levels."""
    return max(rows, key=lambda key: (round(right_class_share(rows[key]["by_size"]), 6), -abs(key[1]), key[0]))


def write_offset_checkpoint(
    source: Path,
    target: Path,
    class_name: str,
    offset: float,
    chosen_on: str,
    from_level: int | None = None,
    overwrite: bool = False,
) -> Path:
    """`source`'s weights with `offset` added to `class_name`'s logits at the anchors of `from_level` and up
    (None: every level, folded into the class head's bias, recorded under `class_logit_offsets`; else
    recorded per level under `level_logit_offsets`); offsets add up over repeated use."""
    from facemask_sdk.spec import ModelSpec
    from facemask_tools.training.checkpoint import (
        derived_checkpoint,
        read_checkpoint,
        refuse_resume_checkpoint,
        save_checkpoint,
    )
    from facemask_tools.training.model import level_offsets_tensor

    payload = read_checkpoint(source)
    refuse_resume_checkpoint(source, payload)
    spec = ModelSpec.from_dict(payload["spec"])
    if offset == 0:  # the best is no change: the weights and their records as they were
        init = {"kind": "class_offset", "source": str(source), "source_init": payload.get("init"), "offset": 0.0}
        return save_checkpoint(target, derived_checkpoint(payload, payload["state_dict"], init), overwrite=overwrite)
    init = {
        "kind": "class_offset",
        "source": str(source),
        "source_init": payload.get("init"),
        "class": class_name,
        "offset": offset,
        "from_level": from_level,
        "chosen_on": chosen_on,
    }
    if from_level is None or from_level <= spec.anchors.min_level:
        result = derived_checkpoint(payload, offset_class_bias(payload["state_dict"], spec, {class_name: offset}), init)
        offsets = dict(payload.get("class_logit_offsets") or {})
        offsets[class_name] = offsets.get(class_name, 0.0) + offset
        result["class_logit_offsets"] = offsets
    else:
        result = derived_checkpoint(payload, payload["state_dict"], init)
        offsets = {name: dict(by_level) for name, by_level in (payload.get("level_logit_offsets") or {}).items()}
        by_level = offsets.setdefault(class_name, {})
        for level in range(from_level, max(from_level, spec.anchors.max_level) + 1):  # a level above the top stays
            by_level[str(level)] = by_level.get(str(level), 0.0) + offset
        level_offsets_tensor(spec, offsets)  # refuses a level or class the model lacks, as loading would
        result["level_logit_offsets"] = offsets
    return save_checkpoint(target, result, overwrite=overwrite)


def _level_range(low: int, high: int) -> str:
    return f"P{low}" if low == high else f"P{low}-P{high}"


def _levels(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in value.replace(" ", "").split(",") if part)
    except ValueError:
        raise click.BadParameter(f"expected pyramid levels like 3,6,7, got {value!r}") from None


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
    type=_offsets,
    default=",".join(f"{offset:g}" for offset in DEFAULT_OFFSETS),
    show_default=True,
    help="Logit offsets to measure (comma-separated).",
)
@click.option(
    "--from-levels",
    type=_levels,
    default="",
    help="Lowest pyramid levels to measure, e.g. 3,6,7: the offset goes to the anchors of that level and up "
    "(default: the model's lowest, every anchor).",
)
@click.option("--iou", "iou_threshold", type=float, default=None, help="Match faces at this IoU (default 0.5).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the checkpoint with the best (levels, offset) pair here (default: measure only).",
)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--batch-size", type=click.IntRange(min=1), default=TrainConfig.eval_batch_size, show_default=True)
@click.option("--device", default="auto", show_default=True)
@malloc_option
def main(
    checkpoint: Path,
    data: str,
    split: str | None,
    class_name: str,
    offsets: tuple[float, ...],
    from_levels: tuple[int, ...],
    iou_threshold: float | None,
    out: Path | None,
    force: bool,
    batch_size: int,
    device: str,
    malloc: str,
) -> None:
    """Measure logit offsets for one class on a dataset (mAP, right-class share by face size), for every
    anchor or those of the top levels, and with --out write CHECKPOINT with the best of them."""
    check_iou(iou_threshold)
    if out is not None and out.resolve() == checkpoint.resolve():
        raise FacemaskError(f"the output {out} is the checkpoint itself; choose another path")
    if out is not None and out.exists() and not force:
        raise FacemaskError(f"{out} exists; pass --force to overwrite or choose another --out")
    choose_allocator(malloc)
    from facemask_tools.training.checkpoint import load_network, refuse_resume_checkpoint
    from facemask_tools.training.device import resolve_device
    from facemask_tools.training.evaluate import detections_from_outputs, head_outputs, score_predictions

    network, spec, payload = load_network(checkpoint)
    refuse_resume_checkpoint(checkpoint, payload)
    if class_name not in spec.classes:
        raise FacemaskError(f"--class {class_name!r} is not one of this model's classes {list(spec.classes)}")
    low, high = spec.anchors.min_level, spec.anchors.max_level
    levels = from_levels or (low,)
    if any(not low <= level <= high for level in levels):
        raise FacemaskError(f"--from-levels must lie in the model's levels {low}-{high}, got {list(levels)}")
    split = split or default_split(data, "train")
    dataset = open_dataset(data, split, spec.classes, payload)
    index = spec.classes.index(class_name)
    outputs = head_outputs(network, spec, dataset.records, batch_size, resolve_device(device))
    stored = list(candidate_outputs(outputs, spec, index))
    rows = {}
    for level in levels:
        for offset in offsets:
            predictions = detections_from_outputs(shifted_outputs(stored, index, level, offset), spec.classes)
            rows[level, offset] = score_predictions(dataset.records, predictions, spec.classes, iou_threshold)
    buckets = list(next(iter(rows.values()))["by_size"]["buckets"])
    earlier = {key: payload[key] for key in ("class_logit_offsets", "level_logit_offsets") if payload.get(key)}
    on_top = f", on top of the checkpoint's own {earlier}" if earlier else ""
    click.echo(f"{data} ({split}): {len(dataset.records)} images; offset added to the logits of {class_name}{on_top}")
    click.echo("| levels | offset | mAP | mAP@.5 | right class, all faces | " + " | ".join(buckets) + " |")
    click.echo("|---" + "|---:" * (4 + len(buckets)) + "|")
    for (level, offset), metrics in rows.items():
        shares = [metrics["by_size"]["buckets"][name]["right_class_share"] for name in buckets]
        cells = " | ".join("" if share is None else f"{share:.2f}" for share in shares)
        click.echo(
            f"| {_level_range(level, high)} | {offset:g} | {metrics['map']:.4f} | {metrics['map50']:.4f} | "
            f"{right_class_share(metrics['by_size']):.3f} | {cells} |"
        )
    level, offset = best_choice(rows)
    click.echo(f"best: offset {offset:g} on {_level_range(level, high)}")
    if out is not None:
        written = write_offset_checkpoint(
            checkpoint, out, class_name, offset, f"{data} ({split})", from_level=level, overwrite=force
        )
        click.echo(f"wrote {written}: {class_name} logits {offset:+g} on {_level_range(level, high)}")
