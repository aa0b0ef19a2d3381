"""Videos are read with the oldest OpenCV the images pin (4.11, JetPack and serving images) as with the
5.x CI runs on: OpenCV 4 has no `cv2.utils.logging`, which once crashed every video, camera and stream."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPENCV_4 = "opencv-python-headless==4.11.0.86"  # docker/constraints-gpu.txt and constraints-serve.txt

READ_A_VIDEO = """
import sys, cv2, numpy as np
from facemask_sdk.sources import resolve_sources
path = sys.argv[1]
writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
for i in range(5):
    writer.write(np.full((48, 64, 3), i * 40, np.uint8))
writer.release()
(source,) = resolve_sources([path])
frames = list(source)
source.close()
print(cv2.__version__, len(frames), source.fps)
"""


@pytest.fixture(scope="session")
def opencv_4(request) -> Path:
    """OpenCV 4.11 installed once into pytest's cache (a folder put first on PYTHONPATH)."""
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider: install per session
    name = "opencv-4.11.0.86"
    folder = Path(cache.mkdir(name)) if cache is not None else request.getfixturevalue("tmp_path_factory").mktemp(name)
    if not (folder / "cv2").is_dir():
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(folder), OPENCV_4],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            pytest.skip(
                f"{OPENCV_4} could not be installed (no package index reachable?): {done.stderr.strip()[-300:]}"
            )
    return folder


@pytest.mark.parametrize("opencv", ["installed", "4.11"])
def test_a_video_is_read_whole(opencv, request, tmp_path):
    env = dict(os.environ)
    if opencv == "4.11":
        env["PYTHONPATH"] = os.pathsep.join(
            [str(request.getfixturevalue("opencv_4")), str(ROOT), env.get("PYTHONPATH", "")]
        )
    done = subprocess.run(
        [sys.executable, "-c", READ_A_VIDEO, str(tmp_path / "clip.avi")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    version, frames, fps = done.stdout.split()
    assert (frames, float(fps)) == ("5", 10.0)
    assert version.startswith("4.11") if opencv == "4.11" else not version.startswith("4.11")


def test_only_believable_frame_rates_are_taken_from_a_container():
    """A header claiming 0.001 frame/s once passed and then broke the video writer (which needs >= 1)."""
    import math

    from facemask_sdk.sources import DEFAULT_FPS, plausible_fps

    for claimed in (0.001, 0.0, -1.0, math.nan, math.inf, 90000.0):
        assert plausible_fps(claimed) == DEFAULT_FPS, claimed
    for claimed in (1.0, 12.5, 29.97, 240.0):
        assert plausible_fps(claimed) == claimed
