"""A compact copy of a VOC face-mask dataset: JPEG images (quality 92), the same annotations and splits.

The 146 MB PNG dataset becomes about 25 MB, small enough to travel to a GPU machine with the working
tree (facemask_tools/training/gpu_run.sh). Figures are always quoted on the original PNG val split, not on this copy.

    python -m facemask_tools.training.compact_data ../shared/datasets/face-mask-detection .data/face-mask-compact
"""

from __future__ import annotations

import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2

QUALITY = 92


def compact(source: Path, target: Path) -> int:
    """Copy `source` to `target` with every image re-encoded as JPEG; returns the bytes written."""
    if target.exists():
        raise SystemExit(f"error: {target} exists; remove it or choose another target")
    (target / "images").mkdir(parents=True)
    (target / "annotations").mkdir()
    if (source / "splits").is_dir():
        shutil.copytree(source / "splits", target / "splits")
    for xml_path in sorted((source / "annotations").glob("*.xml")):
        tree = ET.parse(xml_path)
        name = tree.getroot().findtext("filename") or f"{xml_path.stem}.png"
        image = cv2.imread(str(source / "images" / name))
        if image is None:
            continue
        jpeg = f"{Path(name).stem}.jpg"
        cv2.imwrite(str(target / "images" / jpeg), image, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        tree.getroot().find("filename").text = jpeg
        tree.write(target / "annotations" / xml_path.name)
    return sum(p.stat().st_size for p in target.rglob("*") if p.is_file())


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m facemask_tools.training.compact_data SOURCE TARGET")
    size = compact(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"wrote {sys.argv[2]}: {size / 2**20:.1f} MiB")
