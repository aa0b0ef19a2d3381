"""Anchor coverage: the share of faces whose best anchor has IoU >= 0.5 (effdet's match threshold).

A face no anchor covers still gets its single best anchor (effdet forces one match per box), but it
then trains from a poor prior; the table tells which anchor scale suits the faces at the input size.

    facemask-sdk dev anchor-coverage --split val --scales 2,3,4
    facemask-sdk dev anchor-coverage --data runs/closeups-val --split all --image-size 768 --by-face-size
"""

from __future__ import annotations

import click
import numpy as np

from facemask_sdk.anchors import generate_anchors
from facemask_sdk.metrics import FACE_SIZE_BUCKETS, bucket_name, face_sizes
from facemask_sdk.postprocess import box_iou_one_to_many
from facemask_sdk.preprocess import Letterbox
from facemask_sdk.spec import AnchorSpec, ModelSpec
from facemask_sdk.voc import VocDataset
from facemask_tools.paths import DATASET, DATASET_HELP

MATCH_IOU = 0.5


def coverage(records, image_size: int, anchor_scale: float, thresholds=(MATCH_IOU,)) -> dict:
    """Share of faces (per size band and overall) whose best anchor IoU reaches each threshold."""
    spec = ModelSpec("tf_efficientdet_lite0", (image_size, image_size), anchors=AnchorSpec(anchor_scale=anchor_scale))
    anchors = generate_anchors(spec)
    best, sizes, shares = [], [], []
    for record in records:
        if not len(record.boxes):
            continue
        faces = Letterbox.fit((record.height, record.width), spec.image_size).to_input(record.boxes)
        best.append(np.array([np.nanmax(box_iou_one_to_many(face, anchors)) for face in faces]))
        sizes.append(np.sqrt((faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])))
        shares.append(face_sizes(record.boxes, (record.height, record.width)))
    best, sizes, shares = np.concatenate(best), np.concatenate(sizes), np.concatenate(shares)
    bands = {
        "< 16 px": sizes < 16,
        "16-32 px": (sizes >= 16) & (sizes < 32),
        ">= 32 px": sizes >= 32,
        "all": sizes >= 0,
    }
    bands |= {bucket_name(b): (shares >= b[0]) & (shares < b[1]) for b in FACE_SIZE_BUCKETS}
    return {
        name: float((best[mask] >= MATCH_IOU).mean()) if mask.any() else float("nan") for name, mask in bands.items()
    } | {
        "faces": int(len(best)),
        "smallest_anchor_px": 8 * anchor_scale,
        "largest_anchor_px": float(np.sqrt(((anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])).max())),
        "share_by_band": {name: float(mask.mean()) for name, mask in bands.items()},
        "count_by_band": {name: int(mask.sum()) for name, mask in bands.items()},
    }


@click.command("anchor-coverage")
@click.option("--data", default=str(DATASET), show_default=DATASET_HELP)
@click.option("--split", default="val", show_default=True)
@click.option("--image-size", type=int, default=512, show_default=True)
@click.option("--scales", default="2,3,4", show_default=True)
@click.option(
    "--by-face-size",
    is_flag=True,
    help="Columns by the face-size buckets of eval (share of the long side) instead of pixels.",
)
def main(data: str, split: str, image_size: int, scales: str, by_face_size: bool) -> None:
    """A Markdown table of anchor coverage per anchor scale."""
    records = VocDataset(data, split).records
    rows = [(float(s), coverage(records, image_size, float(s))) for s in scales.split(",")]
    columns = [bucket_name(b) for b in FACE_SIZE_BUCKETS] if by_face_size else ["< 16 px", "16-32 px", ">= 32 px"]
    counts = rows[0][1]["count_by_band"]
    header = " | ".join(f"{band} ({counts[band]} faces)" for band in columns)
    click.echo(
        f"{data} ({split}), {rows[0][1]['faces']} faces at {image_size} px; share of faces with best-anchor IoU >= {MATCH_IOU}:\n"
    )
    click.echo(f"| anchor scale | anchors | {header} | all |")
    click.echo("|---:|---:|" + "---:|" * (len(columns) + 1))
    for scale, row in rows:
        cells = " | ".join("-" if np.isnan(row[band]) else f"{row[band]:.1%}" for band in columns)
        click.echo(
            f"| {scale:g} | {row['smallest_anchor_px']:g}-{row['largest_anchor_px']:.0f} px | {cells} | {row['all']:.1%} |"
        )
