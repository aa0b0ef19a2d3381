"""What `facemask-sdk detect` reads: image files, folders, globs, video files, cameras and streams.

`resolve_sources(["samples/", "clip.mp4", "0", "rtsp://cam/stream"])` turns command-line arguments into
`ImageSource`s (a list of image files) and `VideoSource`s (an opened `cv2.VideoCapture`), checking that
each exists and opens before any work starts. Iterating over a source yields `Frame`s of BGR uint8.

Rules, in order: an `rtsp://`, `rtmp://`, `http://` or `https://` URL is a stream; an existing folder
gives its images and videos (sorted, not recursive); an existing file is an image or a video by its
suffix; all digits is a camera index; anything with `*`, `?` or `[` is a glob (`**` recurses).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facemask_sdk.errors import FacemaskError
from facemask_sdk.image_io import IMAGE_SUFFIXES, read_image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")
DEFAULT_FPS = 30.0
FPS_RANGE = (1.0, 240.0)
"""Frame rates a container may claim and be believed: OpenCV's video writers refuse under 1 frame/s."""


def plausible_fps(claimed: float) -> float:
    """The container's frame rate where it is believable (FPS_RANGE), else DEFAULT_FPS (cameras and
    streams often report 0, NaN or nonsense such as 0.001 or 90000)."""
    return claimed if math.isfinite(claimed) and FPS_RANGE[0] <= claimed <= FPS_RANGE[1] else DEFAULT_FPS


"""Frame rate assumed for writing when a camera or stream does not report a usable one."""
DEFAULT_TIMEOUT_S = 10.0
"""How long a stream may take to open or to deliver a frame before it counts as timed out."""


@dataclass(frozen=True)
class Frame:
    """One image or video frame: BGR uint8 pixels, where it came from and its index in that source.

    An image file that cannot be read is still a frame, with `image` None and `error` saying why, so a
    run over many files reports it and goes on with the others.
    """

    image: np.ndarray | None
    source: str
    index: int
    error: str | None = None


class ImageSource:
    """Image files from one argument (a file, a folder or a glob), read one by one when iterated."""

    kind = "images"

    def __init__(self, paths: Sequence[Path], argument: str) -> None:
        self.paths = [Path(p) for p in paths]
        self.argument = argument

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Frame]:
        for path in self.paths:
            try:
                yield Frame(read_image(path), str(path), 0)
            except (FacemaskError, OSError) as exc:
                yield Frame(None, str(path), 0, error=str(exc))

    def close(self) -> None:
        """Nothing to release (files are read and closed one by one)."""

    def __repr__(self) -> str:
        return f"ImageSource({self.argument!r}, {len(self)} images)"


class VideoSource:
    """A video file, camera or network stream opened with OpenCV; `kind` is "video", "camera" or "stream"."""

    def __init__(self, target: str | int, kind: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.target = target
        self.kind = kind
        self.frames_read = 0
        started = time.monotonic()
        with _quiet_opencv():  # failed opens are reported below in one line, not as OpenCV warnings
            if kind == "stream":  # a server that accepts and never answers must not block for ever
                ms = max(1, int(timeout_s * 1000))
                params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
                self._capture = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
            else:
                self._capture = cv2.VideoCapture(target)
        if not self._capture.isOpened():
            self._capture.release()
            what = {"video": "video file", "camera": "camera", "stream": "stream"}[kind]
            waited = time.monotonic() - started
            if kind == "stream" and waited >= 0.9 * timeout_s:
                raise FacemaskError(
                    f"cannot open stream {target!r}: timed out after {waited:.0f} s with no video (--timeout)"
                )
            raise FacemaskError(f"cannot open {what} {target!r} (unreadable, unsupported codec or unreachable)")
        self.fps = plausible_fps(float(self._capture.get(cv2.CAP_PROP_FPS)))
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)) if kind == "video" else 0
        self.frame_count: int | None = count if count > 0 else None
        """Frames in a video file as its container reports them (None for live sources or when unknown)."""

    @property
    def name(self) -> str:
        """A file-name-safe stem for outputs: the video's stem, `camera0`, or the stream's host and path."""
        if self.kind == "video":
            return Path(str(self.target)).stem
        if self.kind == "camera":
            return f"camera{self.target}"
        address = re.sub(r"^[a-z]+://", "", str(self.target)).split("?")[0]
        address = address.split("@")[-1]  # drop user:password@
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", address).strip("_.") or "stream"

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while self._capture is not None:
            ok, image = self._capture.read()
            if not ok or image is None:
                return
            self.frames_read += 1
            yield Frame(image, str(self.target), index)
            index += 1

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def __repr__(self) -> str:
        return f"VideoSource({self.target!r}, {self.kind})"


Source = ImageSource | VideoSource


def resolve_sources(arguments: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Source]:
    """Sources for the command-line arguments, in order; `FacemaskError`/`FileNotFoundError` on the first bad one.

    Video captures opened so far are released if a later argument fails.
    """
    if not arguments:
        raise FacemaskError("no SOURCE given: pass image files, folders, globs, videos, a camera index or a URL")
    sources: list[Source] = []
    try:
        for argument in arguments:
            sources.extend(_resolve(str(argument), timeout_s))
    except (FacemaskError, FileNotFoundError):
        for source in sources:
            source.close()
        raise
    return sources


def _resolve(argument: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Source]:
    if argument.lower().startswith(STREAM_PREFIXES):
        return [VideoSource(argument, "stream", timeout_s)]
    path = Path(argument).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        sources = _from_files([p for p in files if _kind(p) is not None], argument)
        if not sources:
            raise FacemaskError(
                f"folder {argument} has no images ({', '.join(IMAGE_SUFFIXES)}) or videos ({', '.join(VIDEO_SUFFIXES)})"
            )
        return sources
    if path.is_file():
        if _kind(path) is None:
            raise FacemaskError(
                f"{argument}: unsupported file type {path.suffix or '(no suffix)'!r}; expected an image "
                f"({', '.join(IMAGE_SUFFIXES)}) or a video ({', '.join(VIDEO_SUFFIXES)})"
            )
        return _from_files([path], argument)
    if argument.isdigit():
        return [VideoSource(int(argument), "camera")]
    if any(char in argument for char in "*?["):
        files = [p for p in _glob_files(argument) if _kind(p) is not None]
        if not files:
            raise FileNotFoundError(f"no images or videos match {argument!r}")
        return _from_files(files, argument)
    raise FileNotFoundError(f"source not found: {argument} (not a file, folder, glob, camera index or URL)")


OPENCV_LOG_SILENT = 0
"""OpenCV's LOG_LEVEL_SILENT: the same number in 4.x and 5.x."""


def _glob_files(pattern: str) -> list[Path]:
    """Files matching `pattern` (`**` recursive), sorted, each once: `**` does not descend into symlinked
    folders (pathlib's rule), so a symlink loop cannot repeat an image or walk for ever."""
    parts = Path(pattern).parts
    first_magic = next(i for i, part in enumerate(parts) if any(char in part for char in "*?["))
    root = Path(*parts[:first_magic]) if first_magic else Path(".")
    seen: set[str] = set()
    files = []
    for path in sorted(root.glob(str(Path(*parts[first_magic:])))):
        real = os.path.realpath(path)
        if path.is_file() and real not in seen:
            seen.add(real)
            files.append(path)
    return files


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Mute OpenCV's (and FFmpeg's) own messages meanwhile. OpenCV 5 keeps the log level under
    `cv2.utils.logging`, OpenCV 4 (4.11 on JetPack images) as `cv2.getLogLevel` / `cv2.setLogLevel`."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None) or cv2
    get_level, set_level = getattr(logging, "getLogLevel", None), getattr(logging, "setLogLevel", None)
    if get_level is None or set_level is None:  # neither API: messages stay, reading still works
        yield
        return
    previous = get_level()
    set_level(OPENCV_LOG_SILENT)
    try:
        yield
    finally:
        set_level(previous)


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return None


def _from_files(paths: list[Path], argument: str) -> list[Source]:
    """Images of one argument become one ImageSource (first, in order); each video its own source.

    An image that cannot be decoded fails when it is read (a `Frame` with its `error`), not here: one
    bad file among many must not stop the others.
    """
    images = [p for p in paths if _kind(p) == "image"]
    sources: list[Source] = [ImageSource(images, argument)] if images else []
    try:
        for path in paths:
            if _kind(path) == "video":
                sources.append(VideoSource(str(path), "video"))
    except FacemaskError:
        for source in sources:
            source.close()
        raise
    return sources
