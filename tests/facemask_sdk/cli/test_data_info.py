"""`facemask-sdk data-info` (facemask_sdk.cli.data_info): the counts of a VOC folder and every problem named
with its file (`make_dataset` and `write_xml`: tests/facemask_sdk/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CLI = [sys.executable, "-m", "facemask_sdk.cli.main"]
SAMPLES = ROOT / "samples"


def _nan_box_dataset(tmp: Path) -> dict[str, bytes]:
    import shutil

    data = tmp / "voc"
    shutil.copytree(SAMPLES, data)
    xml = sorted((data / "annotations").glob("*.xml"))[0]
    text = xml.read_text()
    start = text.index("<xmin>") + len("<xmin>")
    xml.write_text(text[:start] + "nan" + text[text.index("</xmin>") :])
    return {}


def test_data_info_names_the_file_with_a_nan_box(tmp_path):
    _nan_box_dataset(tmp_path)
    result = subprocess.run(
        CLI + ["data-info", str(tmp_path / "voc")], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0
    assert "non-finite bndbox" in result.stdout and ".xml" in result.stdout and "problems: none" not in result.stdout


def test_data_info_cli(tmp_path, make_dataset, write_xml):
    root = make_dataset(tmp_path / "d", 3)
    write_xml(root / "annotations" / "img2.xml", "img2.png", (80, 60), [("with_mask", (10, 10, 10, 30))])
    run = subprocess.run(
        [sys.executable, "-m", "facemask_sdk.cli.main", "data-info", str(root)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "images: 3  boxes: 2" in run.stdout and "dropped boxes: 1" in run.stdout and "img2.xml" in run.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "facemask_sdk.cli.main", "data-info", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "not a folder" in bad.stderr
