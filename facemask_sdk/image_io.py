"""Turn whatever the user hands us into the one image format the pipeline uses: BGR uint8 HxWx3.

Grayscale and RGBA are converted (OpenCV's conventions), 16-bit images are scaled to 8 bits; anything
else gets a `FacemaskError` that names what was expected and what was found.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facemask_sdk.errors import FacemaskError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8 HxWx3; clear errors for missing or unreadable files."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    if not path.is_file():
        raise FacemaskError(f"not an image file: {path}")
    return decode_image(np.fromfile(str(path), dtype=np.uint8), source=str(path))


def decode_image(data: bytes | np.ndarray, source: str = "image") -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ...) as BGR uint8 HxWx3: what a file or a network request carries."""
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if image is None:
        raise FacemaskError(f"cannot decode image (corrupt or not an image): {source}")
    return to_bgr8(image, source=source)


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
        raise FacemaskError(
            f"{source} has shape {image.shape}; expected HxW (grayscale), HxWx3 (BGR) or HxWx4 (BGRA)"
        )
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype == np.bool_ or image.dtype.kind == "f" or image.dtype != np.uint8:
        raise FacemaskError(
            f"{source} has dtype {image.dtype}; expected uint8 (or uint16, which is scaled to 8 bits)"
        )
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)
