"""facemask-sdk: face-mask detection for edge devices.

The runtime needs NumPy and OpenCV only (plus onnxruntime or TensorRT for a backend); it never
imports torch, effdet or onnx.

    >>> from facemask_sdk import Detector
    >>> detector = Detector()            # the shipped model, best backend available
    >>> detections = detector("photo.jpg")
    >>> detections.summary()
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib

from facemask_sdk.errors import FacemaskError, ModelFileError
from facemask_sdk.spec import CLASSES, AnchorSpec, ModelSpec

# Public names loaded on first use, so `import facemask_sdk` stays light (no onnxruntime, no cv2).
_LAZY = {
    "Detector": "facemask_sdk.detector",
    "Detections": "facemask_sdk.detections",
    "annotate": "facemask_sdk.annotation",
    "FaceTracker": "facemask_sdk.tracking",
    "TrackerConfig": "facemask_sdk.tracking",
    "blur_faces": "facemask_sdk.privacy",
}

__all__ = ["CLASSES", "AnchorSpec", "FacemaskError", "ModelFileError", "ModelSpec", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
