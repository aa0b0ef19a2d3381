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

from facemask_sdk.errors import FacemaskError, ModelFileError
from facemask_sdk.spec import CLASSES, AnchorSpec, ModelSpec

__all__ = ["CLASSES", "AnchorSpec", "FacemaskError", "ModelFileError", "ModelSpec", "__version__"]
