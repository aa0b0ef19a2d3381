"""Sources (facemask_sdk.sources): a recursive glob through a symlink loop names each image once."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from facemask_sdk.sources import resolve_sources

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "images"


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_a_symlink_loop_neither_repeats_an_image_nor_walks_for_ever(tmp_path, monkeypatch):
    image = sorted(SAMPLES.glob("*.png"))[0]
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(image, tmp_path / "a" / "b" / image.name)
    for name in ("up", "up2"):  # two loops per level: 2**40 paths for a walker that follows them
        os.symlink("..", tmp_path / "a" / "b" / name)
    (tmp_path / "a" / "link.png").symlink_to(tmp_path / "a" / "b" / image.name)  # the same file twice
    monkeypatch.chdir(tmp_path)
    for pattern in ("a/**/*.png", str(tmp_path / "a" / "**" / "*.png")):
        (source,) = resolve_sources([pattern])
        assert len(source) == 1, pattern
