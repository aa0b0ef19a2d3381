"""Pascal VOC face-mask data laid out like the Kaggle download: `images/`, `annotations/`, `splits/`.

The reader never crashes on bad data: every problem is recorded with the file it came from.
Boxes outside the image are clipped and counted, degenerate boxes dropped and counted, images
without a readable annotation skipped. An unknown class name is an error (it usually means the
wrong dataset or class list) whose message lists the known classes.
"""

from __future__ import annotations

import math
import random
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facemask_sdk.detections import Detections
from facemask_sdk.errors import DataError, FacemaskError
from facemask_sdk.image_io import IMAGE_SUFFIXES, file_image_size, max_image_pixels, read_image
from facemask_sdk.spec import CLASSES

SPLITS = ("train", "val", "all")
MIN_BOX_SIZE = 1.0
"""Boxes narrower or shorter than this (pixels, after clipping) are dropped as degenerate."""


@dataclass(frozen=True)
class ImageRecord:
    """One annotated image: boxes are float32 xyxy pixels, already clipped to the image."""

    stem: str
    image_path: Path
    width: int
    height: int
    boxes: np.ndarray
    class_ids: np.ndarray

    def ground_truth(self, class_names: tuple[str, ...] = CLASSES) -> Detections:
        """The annotated boxes as `Detections` (score 1 each): what the metrics compare predictions with."""
        return Detections(self.boxes, np.ones(len(self.boxes), np.float32), self.class_ids, class_names)

    def load(self) -> np.ndarray:
        """The image as BGR uint8; `DataError` naming the file if it cannot be read."""
        try:
            return read_image(self.image_path)
        except (FileNotFoundError, ValueError) as exc:
            raise DataError(f"{self.image_path}: {exc}") from None


@dataclass
class DataReport:
    """What the reader found wrong, per file, and what it did about it."""

    problems: list[str] = field(default_factory=list)
    clipped_boxes: int = 0
    dropped_boxes: int = 0
    skipped: list[str] = field(default_factory=list)  # the problems that left an image out, each also in `problems`

    @property
    def skipped_images(self) -> int:
        return len(self.skipped)

    def skip(self, problem: str) -> None:
        """Record a problem that leaves its image out: every reader names these (train, eval, data-info)."""
        self.problems.append(problem)
        self.skipped.append(problem)


class VocDataset:
    """The records of one split of a VOC face-mask folder.

    Split files (`splits/train.txt`, `splits/val.txt`) are used when present; otherwise the stems are
    split deterministically with `seed` and `val_fraction`.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "all",
        classes: tuple[str, ...] = CLASSES,
        val_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.classes = tuple(classes)
        self.report = DataReport()
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
        self.images_dir = self.root / "images"
        self.annotations_dir = self.root / "annotations"
        for folder in (self.root, self.images_dir, self.annotations_dir):
            if not folder.is_dir():
                raise DataError(
                    f"{folder} is not a folder; expected a VOC dataset with images/ and annotations/ "
                    f"(as in the Kaggle face-mask download)"
                )
        max_image_pixels()  # a malformed FACEMASK_MAX_IMAGE_PIXELS is named here, not taken for unreadable images
        stems = self._split_stems(split, val_fraction, seed)
        self.records: list[ImageRecord] = []
        for stem in stems:
            record = self._read_record(stem)
            if record is not None:
                self.records.append(record)
        if not self.records:
            raise DataError(f"no usable annotated images in {self.root} (split {split!r})")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> ImageRecord:
        return self.records[index]

    def _split_stems(self, split: str, val_fraction: float, seed: int) -> list[str]:
        all_stems = sorted(p.stem for p in self.annotations_dir.glob("*.xml"))
        if split == "all":
            return all_stems
        split_file = self.root / "splits" / f"{split}.txt"
        if split_file.is_file():
            stems = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
            unknown = sorted(set(stems) - set(all_stems))
            for stem in unknown:
                self.report.skip(f"{split_file}: '{stem}' has no annotation file; skipped")
            return [s for s in stems if s not in set(unknown)]
        shuffled = list(all_stems)
        random.Random(seed).shuffle(shuffled)
        n_val = max(1, round(len(shuffled) * val_fraction))
        chosen = shuffled[:n_val] if split == "val" else shuffled[n_val:]
        return sorted(chosen)

    def _find_image(self, stem: str, filename: str | None) -> Path | None:
        if filename:
            candidate = self.images_dir / Path(filename).name
            if candidate.is_file():
                return candidate
        for suffix in IMAGE_SUFFIXES:
            candidate = self.images_dir / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
        return None

    def _read_record(self, stem: str) -> ImageRecord | None:
        xml_path = self.annotations_dir / f"{stem}.xml"
        try:
            root = ET.parse(xml_path).getroot()
        except (ET.ParseError, OSError) as exc:
            self.report.skip(f"{xml_path}: malformed XML ({exc}); image skipped")
            return None
        image_path = self._find_image(stem, root.findtext("filename"))
        if image_path is None:
            self.report.skip(f"{xml_path}: no image file for '{stem}' in {self.images_dir}; skipped")
            return None
        try:  # from the header alone: a file no reader accepts, or one over the pixel budget, never reaches training
            declared = file_image_size(image_path)
        except OSError as exc:
            self.report.skip(f"{image_path}: unreadable image ({exc.strerror or exc}); skipped")
            return None
        except FacemaskError as exc:  # its message names the file
            self.report.skip(f"unreadable image: {exc}; skipped")
            return None
        try:
            width = int(float(root.findtext("size/width", "0")))
            height = int(float(root.findtext("size/height", "0")))
        except ValueError:
            width = height = 0
        if width <= 0 or height <= 0:
            width, height = declared
        boxes, class_ids = [], []
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in self.classes:
                raise DataError(f"{xml_path}: unknown class '{name}'; known classes: {', '.join(self.classes)}")
            try:
                x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError):
                self.report.problems.append(f"{xml_path}: object '{name}' has a missing or non-numeric bndbox; dropped")
                self.report.dropped_boxes += 1
                continue
            if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
                self.report.problems.append(
                    f"{xml_path}: object '{name}' has a non-finite bndbox {x1:g},{y1:g},{x2:g},{y2:g}; dropped"
                )
                self.report.dropped_boxes += 1
                continue
            cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
            cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
            if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
                self.report.clipped_boxes += 1
                self.report.problems.append(
                    f"{xml_path}: box {x1:g},{y1:g},{x2:g},{y2:g} ('{name}') extends outside the "
                    f"{width}x{height} image; clipped"
                )
            if cx2 - cx1 < MIN_BOX_SIZE or cy2 - cy1 < MIN_BOX_SIZE:
                self.report.problems.append(
                    f"{xml_path}: degenerate box {x1:g},{y1:g},{x2:g},{y2:g} ('{name}'); dropped"
                )
                self.report.dropped_boxes += 1
                continue
            boxes.append((cx1, cy1, cx2, cy2))
            class_ids.append(self.classes.index(name))
        return ImageRecord(
            stem=stem,
            image_path=image_path,
            width=width,
            height=height,
            boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            class_ids=np.asarray(class_ids, dtype=np.int64),
        )

    def summary(self, check_images: bool = True) -> dict:
        """Counts for `facemask-sdk data-info`: images, boxes per class, box sizes, problems."""
        per_class = Counter()
        sizes = []
        for record in self.records:
            per_class.update(self.classes[i] for i in record.class_ids)
            wh = record.boxes[:, 2:] - record.boxes[:, :2]
            sizes.extend(np.sqrt(wh[:, 0] * wh[:, 1]).tolist())
            if check_images:
                try:
                    image = read_image(record.image_path)
                    if image.shape[:2] != (record.height, record.width):
                        self.report.problems.append(
                            f"{record.image_path}: size {image.shape[1]}x{image.shape[0]} differs from "
                            f"its annotation ({record.width}x{record.height})"
                        )
                except (FileNotFoundError, ValueError) as exc:
                    self.report.problems.append(f"{record.image_path}: unreadable image ({exc})")
        sizes_arr = np.asarray(sizes, dtype=np.float64)
        edges = [0, 16, 32, 64, 96, 128, 256, float("inf")]
        hist = np.histogram(sizes_arr, bins=edges)[0] if sizes_arr.size else np.zeros(len(edges) - 1, int)
        return {
            "root": str(self.root),
            "split": self.split,
            "images": len(self.records),
            "boxes": int(sum(per_class.values())),
            "boxes_per_class": {name: int(per_class.get(name, 0)) for name in self.classes},
            "box_size_sqrt_area": {
                "min": float(sizes_arr.min()) if sizes_arr.size else None,
                "median": float(np.median(sizes_arr)) if sizes_arr.size else None,
                "max": float(sizes_arr.max()) if sizes_arr.size else None,
                "histogram": {
                    f"{int(lo)}-{'inf' if hi == float('inf') else int(hi)}": int(n)
                    for lo, hi, n in zip(edges[:-1], edges[1:], hist)
                },
            },
            "clipped_boxes": self.report.clipped_boxes,
            "dropped_boxes": self.report.dropped_boxes,
            "skipped_images": self.report.skipped_images,
            "problems": list(self.report.problems),
        }
