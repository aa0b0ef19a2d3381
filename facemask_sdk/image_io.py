"""Turn whatever the user hands us into the one image format the pipeline uses: BGR uint8 HxWx3.

Grayscale and RGBA are converted (OpenCV's conventions), 16-bit images are scaled to 8 bits; anything
else gets a `FacemaskError` that names what was expected and what was found.

Every encoded image passes one pixel budget before it is decoded: its width and height are read from
the file's header (JPEG, PNG, BMP, WebP, TIFF, PNM), and an image over `max_image_pixels()` is refused
like an unreadable file. A few hundred KB of PNG can declare 30000x30000 pixels, which would decode to
2.7 GB; the budget keeps every reader (`Detector`, `detect`, `serve`, training data) bounded.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from pathlib import Path

import cv2
import numpy as np

from facemask_sdk.errors import FacemaskError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
"""100 MP: above any phone or security camera photo in common use (a 108 MP photo is 12000x9000), about
300 MB once decoded as BGR. Set FACEMASK_MAX_IMAGE_PIXELS to change it."""
MAX_PIXELS_VARIABLE = "FACEMASK_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int:
    """The pixel budget: FACEMASK_MAX_IMAGE_PIXELS when set (a positive integer), else 100 MP."""
    value = os.environ.get(MAX_PIXELS_VARIABLE)
    if value is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        budget = int(value)
    except ValueError:
        budget = 0
    if budget < 1:
        raise FacemaskError(f"{MAX_PIXELS_VARIABLE} must be a positive whole number of pixels, not {value!r}")
    return budget


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8 HxWx3; clear errors for missing or unreadable files."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    if not path.is_file():
        raise FacemaskError(f"not an image file: {path}")
    return decode_image(np.fromfile(str(path), dtype=np.uint8), source=str(path))


def decode_image(data: bytes | np.ndarray, source: str = "image") -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ...) as BGR uint8 HxWx3: what a file or a network request carries.

    The header's size is checked against the pixel budget before anything is decoded."""
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    buffer = np.ascontiguousarray(buffer, dtype=np.uint8).reshape(-1)
    size = image_header_size(memoryview(buffer)) if buffer.size else None
    check_declared_size(size, source)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is None:
        raise FacemaskError(f"cannot decode image (corrupt, not an image, or not one of {READABLE_FORMATS}): {source}")
    return to_bgr8(image, source=source)


READABLE_FORMATS = "JPEG, PNG, BMP, WebP, TIFF, PNM"


def check_declared_size(size: tuple[int, int] | None, source: str) -> None:
    """`FacemaskError` unless a header declared a size (`image_header_size`) within the pixel budget."""
    if size is None:
        raise FacemaskError(f"cannot decode image (corrupt, not an image, or not one of {READABLE_FORMATS}): {source}")
    budget = max_image_pixels()
    if size[0] * size[1] > budget:
        raise FacemaskError(
            f"image too large: {source} declares {size[0]}x{size[1]} pixels, over the budget of {budget:,} "
            f"(set {MAX_PIXELS_VARIABLE} to allow more)"
        )


def file_image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the image file at `path`, from its header through a memory map (only the pages the
    header needs are read), checked like `decode_image` checks it: `FacemaskError` for a file no reader
    accepts or one over the pixel budget. Lets a dataset drop such files before training ever loads one."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block open(), a folder has no header
        raise FacemaskError(f"not an image file: {path}")
    size = None
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                size = image_header_size(mapped)
    check_declared_size(size, str(path))
    return size


def image_header_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) as the header of a JPEG, PNG, BMP, WebP, TIFF or PNM file declares it, without
    decoding; None for anything else (other formats are not read) or a header too broken to say.

    Takes the whole file (a memoryview costs no copy): a JPEG's frame header can follow large EXIF, XMP
    and ICC segments, and a TIFF's directory usually follows the pixel data."""
    head = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    magic = bytes(head[:8])
    try:
        for signature, reader in _HEADER_READERS:
            if magic.startswith(signature):
                size = reader(head)
                return size if size and size[0] > 0 and size[1] > 0 else None
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _png_size(head: memoryview) -> tuple[int, int] | None:
    return struct.unpack(">II", head[16:24]) if bytes(head[12:16]) == b"IHDR" else None


def _jpeg_size(head: memoryview) -> tuple[int, int] | None:
    frame_markers = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
    at = 2
    while at + 4 <= len(head):
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        if marker == 0xDA:  # start of scan before any frame header: not a JPEG a decoder accepts
            return None
        length = struct.unpack(">H", head[at + 2 : at + 4])[0]
        if marker in frame_markers:
            height, width = struct.unpack(">HH", head[at + 5 : at + 9])
            return width, height
        at += 2 + length
    return None


def _bmp_size(head: memoryview) -> tuple[int, int] | None:
    header = struct.unpack("<I", head[14:18])[0]
    if header == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", head[18:22])
    width, height = struct.unpack("<ii", head[18:26])
    return width, abs(height)


def _webp_size(head: memoryview) -> tuple[int, int] | None:
    if bytes(head[8:12]) != b"WEBP":
        return None
    chunk = bytes(head[12:16])
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = struct.unpack("<I", head[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(bytes(head[24:27]), "little") + 1, int.from_bytes(bytes(head[27:30]), "little") + 1
    return None


def _tiff_size(head: memoryview) -> tuple[int, int] | None:
    order = "<" if bytes(head[:2]) == b"II" else ">"
    big = struct.unpack(order + "H", head[2:4])[0] == 43  # BigTIFF
    offset = struct.unpack(order + ("Q" if big else "I"), head[8:16] if big else head[4:8])[0]
    count_format, entry_size = (order + "Q", 20) if big else (order + "H", 12)
    count = struct.unpack(count_format, head[offset : offset + struct.calcsize(count_format)])[0]
    first = offset + struct.calcsize(count_format)
    found = {}
    for index in range(min(count, 4096)):
        entry = head[first + index * entry_size : first + (index + 1) * entry_size]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            value = entry[12:] if big else entry[8:]
            value_format = {3: "H", 4: "I", 16: "Q"}.get(kind)
            if value_format is None:
                return None
            found[tag] = struct.unpack_from(order + value_format, value)[0]
    return (found[256], found[257]) if len(found) == 2 else None


def _pnm_size(head: memoryview) -> tuple[int, int] | None:
    tokens: list[bytes] = []
    for line in bytes(head[2:4096]).split(b"\n"):
        tokens += line.split(b"#", 1)[0].split()
        if len(tokens) >= 2:
            return int(tokens[0]), int(tokens[1])
    return None


_HEADER_READERS = (
    (b"\x89PNG\r\n\x1a\n", _png_size),
    (b"\xff\xd8", _jpeg_size),
    (b"BM", _bmp_size),
    (b"RIFF", _webp_size),
    (b"II*\x00", _tiff_size),
    (b"MM\x00*", _tiff_size),
    (b"II+\x00", _tiff_size),
    (b"MM\x00+", _tiff_size),
    *((f"P{kind}".encode(), _pnm_size) for kind in "123456"),
)


def to_bgr8(image: object, source: str = "image") -> np.ndarray:
    """Validate an array and convert it to contiguous BGR uint8 HxWx3."""
    if image is None:
        raise FacemaskError(f"{source} is None; expected a BGR uint8 HxWx3 array or an image path")
    if not isinstance(image, np.ndarray):
        raise FacemaskError(f"{source} must be a numpy array or a path, got {type(image).__name__}")
    if image.size == 0:
        raise FacemaskError(f"{source} is empty (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise FacemaskError(f"{source} has shape {image.shape}; expected HxW (grayscale), HxWx3 (BGR) or HxWx4 (BGRA)")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype == np.bool_ or image.dtype.kind == "f" or image.dtype != np.uint8:
        raise FacemaskError(f"{source} has dtype {image.dtype}; expected uint8 (or uint16, which is scaled to 8 bits)")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)
