"""A compact copy of a VOC face-mask dataset: JPEG images (quality 92), the same annotations and splits.

The 146 MB PNG dataset becomes about 30 MiB at quality 92, 16 MiB at 70, 13.3 MiB at 55 (measured), to travel to a GPU machine
with the working tree (tests/gpu/device_session.sh). Figures are always quoted on the original PNG val split, not on this copy.

    facemask-sdk dev compact-data ../shared/datasets/face-mask-detection runs/compact-data --quality 55
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import click
import cv2

from facemask_sdk.errors import FacemaskError
from facemask_sdk.image_io import read_image

QUALITY = 92


def compact(source: Path, target: Path, quality: int = QUALITY) -> int:
    """Copy `source` to `target` with every image re-encoded as JPEG at `quality`; returns the bytes written. An
    existing `target` is refused (`FacemaskError`)."""
    if target.exists():
        raise FacemaskError(f"{target} exists; remove it or choose another target")
    (target / "images").mkdir(parents=True)
    (target / "annotations").mkdir()
    if (source / "splits").is_dir():
        shutil.copytree(source / "splits", target / "splits")
    for xml_path in sorted((source / "annotations").glob("*.xml")):
        tree = ET.parse(xml_path)
        name = tree.getroot().findtext("filename") or f"{xml_path.stem}.png"
        try:  # through the SDK's reader: the pixel budget holds here too
            image = read_image(source / "images" / name)
        except (OSError, ValueError):
            continue  # unreadable or over the pixel budget: left out, as training would leave it out
        jpeg = f"{Path(name).stem}.jpg"
        cv2.imwrite(str(target / "images" / jpeg), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        tree.getroot().find("filename").text = jpeg
        tree.write(target / "annotations" / xml_path.name)
    return sum(p.stat().st_size for p in target.rglob("*") if p.is_file())


@click.command("compact-data")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=QUALITY,
    show_default=True,
    help="JPEG quality: 55 makes the Kaggle set 13.3 MiB with its annotations (a lent GPU machine takes 64 MiB of "
    "working tree in all).",
)
def main(source: Path, target: Path, quality: int) -> None:
    """A compact copy of the VOC folder SOURCE at TARGET (a new folder): JPEG images, the same annotations and
    splits."""
    size = compact(source, target, quality)
    click.echo(f"wrote {target}: {size / 2**20:.1f} MiB")
