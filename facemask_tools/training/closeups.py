"""The close-up view of a VOC split: one square crop around each face large enough, so that face spans
25-90% of the frame, written as a VOC folder that `facemask-sdk eval --data` reads.

The Kaggle photos hold almost no close-ups (90% of the faces are under 15.5% of the image's long side),
while a webcam at a shop door sees a face filling the frame; this view measures that case on faces the
model was never trained on. It is deterministic: the same source, split and seed give the same files.

    facemask-sdk closeup-view --data ../shared/datasets/face-mask-detection --split val --out runs/closeups-val
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import click
import cv2
import numpy as np
from tqdm import tqdm

from facemask_sdk.errors import FacemaskError
from facemask_sdk.spec import CLASSES
from facemask_sdk.voc import ImageRecord, VocDataset
from facemask_tools.paths import DATASET, DATASET_HELP
from facemask_tools.training.augment import clip_boxes

SHARE_RANGE = (0.25, 0.9)
"""A face's size in its crop (sqrt of box area over the crop's side) is drawn uniformly from this range."""
MIN_FACE_SIDE = 32
"""Faces whose shorter side is under this many pixels get no crop: enlarged to a close-up they are only blur."""


def closeup_crops(
    record: ImageRecord, image: np.ndarray, seed: int, index: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(crop, boxes in crop pixels, class ids) for every face of `record` that is large enough."""
    crops = []
    height, width = image.shape[:2]
    for face_index, face in enumerate(record.boxes):
        face_w, face_h = face[2] - face[0], face[3] - face[1]
        if min(face_w, face_h) < MIN_FACE_SIDE:
            continue
        rng = np.random.default_rng([seed, index, face_index])
        side_of_face = float(np.sqrt(face_w * face_h))
        share = min(rng.uniform(*SHARE_RANGE), side_of_face / max(face_w, face_h))  # the whole face fits
        side = int(round(side_of_face / share))
        # anywhere that keeps the face inside the crop, and the crop inside the image where it can be
        low_x, high_x = face[2] - side, face[0]
        low_y, high_y = face[3] - side, face[1]
        x0 = rng.uniform(low_x, high_x)
        y0 = rng.uniform(low_y, high_y)
        if side <= width:
            x0 = float(np.clip(x0, max(low_x, 0), max(min(high_x, width - side), max(low_x, 0))))
        if side <= height:
            y0 = float(np.clip(y0, max(low_y, 0), max(min(high_y, height - side), max(low_y, 0))))
        x0, y0 = int(round(x0)), int(round(y0))
        matrix = np.array([[1, 0, -x0], [0, 1, -y0]], np.float32)
        crop = cv2.warpAffine(image, matrix, (side, side), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
        # the chosen face lies whole inside; a neighbour cut by the crop stays labelled as in training
        boxes, class_ids = clip_boxes(
            record.boxes - np.array([x0, y0, x0, y0], np.float32), record.class_ids, side, side
        )
        crops.append((crop, boxes, class_ids))
    return crops


def write_voc(folder: Path, stem: str, image: np.ndarray, boxes: np.ndarray, class_ids: np.ndarray) -> None:
    """One PNG under images/ and its Pascal VOC annotation under annotations/."""
    cv2.imwrite(str(folder / "images" / f"{stem}.png"), image)
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = f"{stem}.png"
    size = ET.SubElement(root, "size")
    for tag, value in (("width", image.shape[1]), ("height", image.shape[0]), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for box, class_id in zip(boxes, class_ids):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = CLASSES[int(class_id)]
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bndbox, tag).text = f"{float(value):.1f}"
    ET.ElementTree(root).write(folder / "annotations" / f"{stem}.xml")


def write_closeups(data: str, split: str, out: Path, seed: int = 0, progress: bool = True) -> int:
    """Write the close-up view of `split` of `data` into `out` (which must not exist); returns the crop count."""
    if out.exists():
        raise FacemaskError(f"{out} exists; remove it or choose another --out")
    dataset = VocDataset(data, split)
    (out / "images").mkdir(parents=True)
    (out / "annotations").mkdir()
    count = 0
    for index, record in enumerate(tqdm(dataset.records, desc="close-ups", unit="image", disable=not progress)):
        for face_index, (crop, boxes, class_ids) in enumerate(closeup_crops(record, record.load(), seed, index)):
            write_voc(out, f"{record.stem}_face{face_index}", crop, boxes, class_ids)
            count += 1
    (out / "README.md").write_text(
        f"# Close-up view of {data} ({split})\n\nOne square crop per face of at least {MIN_FACE_SIDE} px, the face spanning "
        f"{SHARE_RANGE[0]:.0%}-{SHARE_RANGE[1]:.0%} of the frame (seed {seed}); {count} crops. Written by\n"
        f"`facemask-sdk closeup-view --data {data} --split {split} --out {out} --seed {seed}`.\n"
    )
    return count


@click.command("closeup-view")
@click.option("--data", default=str(DATASET), show_default=DATASET_HELP, help="VOC folder.")
@click.option("--split", type=click.Choice(["train", "val", "all"]), default="val", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New folder for images/ and annotations/.")
@click.option("--seed", type=int, default=0, show_default=True)
def closeup_view(data: str, split: str, out: str, seed: int) -> None:
    """Write the close-up view of a split: crops where one face spans 25-90% of the frame, for eval."""
    count = write_closeups(data, split, Path(out), seed)
    click.echo(f"wrote {count} close-ups to {out}; evaluate with: facemask-sdk eval --data {out} --checkpoint CKPT")
