"""Evaluate a PyTorch network on a dataset split with the runtime's post-processing and the COCO metric."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from facemask_sdk.anchors import generate_anchors
from facemask_sdk.closeups import DEFAULT_CLOSEUP_CHECK, CloseupCheck, check_closeups, fill_colour, shrink_frame
from facemask_sdk.detections import Detections
from facemask_sdk.metrics import EVAL_IOU_THRESHOLD, evaluate_detections, evaluation_config, size_breakdown
from facemask_sdk.postprocess import postprocess_detections
from facemask_sdk.preprocess import Letterbox, preprocess
from facemask_sdk.spec import ModelSpec
from facemask_sdk.voc import ImageRecord
from facemask_tools.training.model import FlatHeads


def head_outputs(
    network: torch.nn.Module,
    spec: ModelSpec,
    records: list[ImageRecord],
    batch_size: int = 8,
    device: str = "cpu",
    progress: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray, Letterbox]]:
    """The bare network's `[A, C]` logits and `[A, 4]` box codes (float32 NumPy) and the letterbox of each
    record, in order: what the runtime's post-processing takes."""
    heads = FlatHeads(network).to(device).eval()
    starts = range(0, len(records), batch_size)
    for start in tqdm(starts, desc="eval", unit="batch", disable=not progress, leave=False):
        chunk = records[start : start + batch_size]
        tensors, letterboxes = [], []
        for record in chunk:
            tensor, letterbox = preprocess(record.load(), spec)
            tensors.append(torch.from_numpy(tensor))
            letterboxes.append(letterbox)
        with torch.no_grad():
            logits, box_codes = (t.float().cpu().numpy() for t in heads(torch.stack(tensors).to(device)))
        yield from zip(logits, box_codes, letterboxes)


@dataclass(frozen=True)
class ShrunkRecord:
    """A record's image as the close-up check's second pass sees it (what `head_outputs` loads)."""

    record: ImageRecord
    check: CloseupCheck
    fill_bgr: tuple[int, int, int]

    def load(self) -> np.ndarray:
        return shrink_frame(self.record.load(), self.check, self.fill_bgr)


def predict_records(
    network: torch.nn.Module,
    spec: ModelSpec,
    records: list[ImageRecord],
    batch_size: int = 8,
    device: str = "cpu",
    progress: bool = True,
    closeup_check: CloseupCheck | None = DEFAULT_CLOSEUP_CHECK,
) -> list[Detections]:
    """Predictions in original-image pixels for every record: the bare network, then the runtime's
    own NumPy post-processing (`facemask_sdk.postprocess`, one box per face) and, as the `Detector`
    does by default, the close-up check (`facemask_sdk.closeups`; None skips it), so a checkpoint's
    figures are those of what the product returns."""
    anchors = generate_anchors(spec)

    def detect(items: list) -> list[Detections]:
        outputs = head_outputs(network, spec, items, batch_size, device, progress)
        return detections_from_outputs(((*output, anchors) for output in outputs), spec.classes)

    predictions = detect(records)
    if closeup_check is None:
        return predictions
    fill = fill_colour(spec.mean)
    return check_closeups(
        predictions,
        [(record.height, record.width) for record in records],
        lambda indices: detect([ShrunkRecord(records[i], closeup_check, fill) for i in indices]),
        closeup_check,
    )


def detections_from_outputs(
    outputs: Iterable[tuple[np.ndarray, np.ndarray, Letterbox, np.ndarray]], classes: tuple[str, ...]
) -> list[Detections]:
    """The evaluation's post-processing of `(logits, box_codes, letterbox, anchors_xyxy)` per image (all
    anchors, or a subset that holds every candidate)."""
    config = evaluation_config()
    return [
        postprocess_detections(logits, box_codes, anchors, letterbox, config, classes)
        for logits, box_codes, letterbox, anchors in outputs
    ]


def score_predictions(
    records: list[ImageRecord],
    predictions: list[Detections],
    classes: tuple[str, ...],
    iou_threshold: float | None = None,
) -> dict:
    """COCO metrics (plus AP at `iou_threshold` when given) and, under `by_size`, the face-size breakdown
    at `iou_threshold` (COCO's 0.5 when not given)."""
    ground_truth = [r.ground_truth(classes) for r in records]
    metrics = evaluate_detections(ground_truth, predictions, classes, iou_threshold=iou_threshold)
    metrics["by_size"] = size_breakdown(
        ground_truth,
        predictions,
        [(r.height, r.width) for r in records],
        classes,
        iou_threshold=EVAL_IOU_THRESHOLD if iou_threshold is None else iou_threshold,
    )
    return metrics


def evaluate_network(
    network: torch.nn.Module,
    spec: ModelSpec,
    records: list[ImageRecord],
    batch_size: int = 8,
    device: str = "cpu",
    progress: bool = True,
    iou_threshold: float | None = None,
    closeup_check: CloseupCheck | None = DEFAULT_CLOSEUP_CHECK,
) -> tuple[dict, list[Detections]]:
    """`score_predictions` of the network's predictions (with the close-up check unless None), and the
    predictions."""
    predictions = predict_records(network, spec, records, batch_size, device, progress, closeup_check)
    return score_predictions(records, predictions, spec.classes, iou_threshold), predictions


def breakdown_lines(by_size: dict) -> list[str]:
    """The size breakdown as a text table: faces, found and right-class shares, and where each class went."""

    def share(value: float | None) -> str:
        return "   -" if value is None else f"{value:.2f}"

    lines = [
        f"by face size (sqrt(area) / long side; found: a box of score >= {by_size['score_threshold']:g} at "
        f"IoU >= {by_size['iou_threshold']:g}; right class: the best such box has the labelled class; shares of all faces):",
        f"  {'size':<10}{'faces':>6}{'found':>7}{'right class':>13}   labelled -> said (counts)",
    ]
    for name, row in by_size["buckets"].items():
        if not row["faces"]:
            lines.append(f"  {name:<10}{0:>6}")
            continue
        confusion = "; ".join(
            f"{truth} -> " + ", ".join(f"{said} {n}" for said, n in said_counts.items() if n)
            for truth, said_counts in row["confusion"].items()
            if any(said_counts.values())
        )
        lines.append(
            f"  {name:<10}{row['faces']:>6}{share(row['found_share']):>7}{share(row['right_class_share']):>13}   {confusion}"
        )
    lines.append(
        f"  {by_size['unmatched_predictions']} of {by_size['confident_predictions']} predictions at score "
        f">= {by_size['score_threshold']:g} lie on no labelled face"
    )
    return lines


def save_prediction_grid(
    records: list[ImageRecord],
    predictions: list[Detections],
    classes: tuple[str, ...],
    path: Path,
    count: int = 12,
    score_threshold: float = 0.4,
    columns: int = 4,
    tile: int = 320,
) -> Path:
    """A PNG grid of annotated images: predictions in class colours, ground truth in thin white."""
    import cv2

    from facemask_sdk.annotation import annotate

    tiles = []
    for record, pred in list(zip(records, predictions))[:count]:
        image = annotate(record.load(), pred[pred.scores >= score_threshold], ground_truth=record.ground_truth(classes))
        letterbox = Letterbox.fit(image.shape[:2], (tile, tile))
        canvas = np.zeros((tile, tile, 3), np.uint8)
        h, w = letterbox.resized_hw
        canvas[:h, :w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        tiles.append(canvas)
    while len(tiles) % columns:
        tiles.append(np.zeros((tile, tile, 3), np.uint8))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    grid = np.vstack(rows)
    legend = "predictions: class colour + score | ground truth: thin white"
    cv2.putText(grid, legend, (8, grid.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), grid)
    return path
