"""The close-up view (facemask_tools.training.closeups): each crop holds its face at 25-90% of the frame,
the labels follow the crop, the files are the same on every run, and an existing folder is never touched."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np

from facemask_sdk.metrics import face_sizes
from facemask_sdk.voc import VocDataset
from facemask_tools.training.closeups import MIN_FACE_SIDE, SHARE_RANGE, write_closeups

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_every_crop_holds_its_face_at_a_closeup_size(tmp_path):
    count = write_closeups(str(SAMPLES), "all", tmp_path / "view", progress=False)
    source = VocDataset(SAMPLES, "all")
    large = sum(
        int((np.minimum(r.boxes[:, 2] - r.boxes[:, 0], r.boxes[:, 3] - r.boxes[:, 1]) >= MIN_FACE_SIDE).sum())
        for r in source.records
    )
    assert count == large > 0
    view = VocDataset(tmp_path / "view", "all")
    assert len(view.records) == count
    for record in view.records:
        assert record.width == record.height
        assert face_sizes(record.boxes, (record.height, record.width)).max() >= SHARE_RANGE[0] - 0.01
        assert (record.boxes >= 0).all() and (record.boxes <= record.width).all()
        # the crop's pixels are the source's: the labelled face is the same face
        stem = record.stem.rsplit("_face", 1)[0]
        original = next(r for r in source.records if r.stem == stem)
        assert set(record.class_ids.tolist()) <= set(original.class_ids.tolist())


def test_the_view_is_reproducible_and_an_existing_folder_is_refused(tmp_path):
    write_closeups(str(SAMPLES), "all", tmp_path / "a", progress=False)
    write_closeups(str(SAMPLES), "all", tmp_path / "b", progress=False)
    first = _digest(tmp_path / "a")
    assert {k: v for k, v in first.items() if k != "README.md"} == {
        k: v for k, v in _digest(tmp_path / "b").items() if k != "README.md"
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "facemask_sdk.cli.main",
            "closeup-view",
            "--data",
            str(SAMPLES),
            "--split",
            "all",
            "--out",
            str(tmp_path / "a"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        done.returncode != 0 and done.stderr.strip().splitlines()[-1].startswith("error:") and "exists" in done.stderr
    )
    assert _digest(tmp_path / "a") == first
