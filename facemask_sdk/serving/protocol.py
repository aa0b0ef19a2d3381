"""The wire contract of every facemask server: one encoded image in, a fixed-size detection set out.

The same names, types and shapes are served by `facemask-sdk serve` (PyTriton), by the generated Triton
model repository (its ensemble) and read by `facemask_sdk.serving.client`, so a client works against
either. Outputs have a fixed length (`MAX_DETECTIONS`, padded, with the count first), the layout of
TensorRT's EfficientNMS plugin: fixed shapes batch without copies and suit every Triton backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facemask_sdk.detections import Detections
from facemask_sdk.errors import FacemaskError
from facemask_sdk.image_io import decode_image
from facemask_sdk.postprocess import PostprocessConfig
from facemask_sdk.spec import CLASSES

MODEL_NAME = "facemask"
MAX_DETECTIONS = PostprocessConfig.max_detections
"""The output length: the SDK's own default limit, enough for any crowd in the data."""


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the contract, without its batch axis; `triton_type` is Triton's name for the dtype."""

    name: str
    dtype: type
    shape: tuple[int, ...]
    triton_type: str


IMAGE = TensorSpec("image", np.object_, (1,), "TYPE_STRING")
"""Encoded image bytes (JPEG, PNG, ...), one image per batch row."""

NUM_DETECTIONS = TensorSpec("num_detections", np.int32, (1,), "TYPE_INT32")
BOXES = TensorSpec("detection_boxes", np.float32, (MAX_DETECTIONS, 4), "TYPE_FP32")
"""xyxy in the original image's pixels; rows past `num_detections` are zero."""
SCORES = TensorSpec("detection_scores", np.float32, (MAX_DETECTIONS,), "TYPE_FP32")
CLASS_IDS = TensorSpec("detection_classes", np.int32, (MAX_DETECTIONS,), "TYPE_INT32")
ERROR = TensorSpec("error", np.object_, (1,), "TYPE_STRING")
"""Why the server could not read this row's image (one line), empty when it could; a refused row has no
detections. Requests share the server's batches: a bad image answers only its own row, never its
neighbours' (a server can only fail a whole batch by raising)."""

INPUTS = (IMAGE,)
OUTPUTS = (NUM_DETECTIONS, BOXES, SCORES, CLASS_IDS, ERROR)


def encode_request(images: list[bytes]) -> np.ndarray:
    """The `image` input of a batch: object array `[N, 1]` of encoded bytes."""
    if not images:
        raise FacemaskError("a request needs at least one image")
    batch = np.empty((len(images), 1), dtype=np.object_)
    for row, data in enumerate(images):
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise FacemaskError(
                f"image {row} of the request must be non-empty encoded bytes, got {type(data).__name__}"
            )
        batch[row, 0] = bytes(data)
    return batch


def request_images(batch: np.ndarray) -> list[bytes]:
    """The encoded images of an `image` input (`[N, 1]` of bytes, as Triton hands it over)."""
    return [bytes(row.reshape(-1)[0]) for row in np.asarray(batch, dtype=np.object_).reshape(len(batch), -1)]


def decode_rows(batch: np.ndarray) -> list[np.ndarray | str]:
    """Each row of an `image` input as a BGR frame, or as the one line that says why it is refused: for a
    batch gathered from several clients' requests, where one client's bad image must not fail the rest."""
    rows: list[np.ndarray | str] = []
    for data in request_images(batch):
        try:
            rows.append(decode_image(data, source="the image sent"))
        except FacemaskError as exc:
            rows.append(str(exc))
    return rows


def decode_request(batch: np.ndarray) -> list[np.ndarray]:
    """The images of one client's request as BGR frames; the first unreadable one fails the request, named
    by its row."""
    rows = decode_rows(batch)
    for row, frame in enumerate(rows):
        if isinstance(frame, str):
            raise FacemaskError(f"image {row} of the request: {frame}")
    return rows


def pack_detections(results: list[Detections | str]) -> dict[str, np.ndarray]:
    """Detections of a batch as the output tensors (each `[N, ...]`), padded to `MAX_DETECTIONS`; a row
    given as a string is a refused image: no detections, the string as its `error`."""
    count = np.zeros((len(results), 1), np.int32)
    boxes = np.zeros((len(results), *BOXES.shape), np.float32)
    scores = np.zeros((len(results), *SCORES.shape), np.float32)
    class_ids = np.zeros((len(results), *CLASS_IDS.shape), np.int32)
    errors = np.full((len(results), 1), b"", dtype=np.object_)
    for row, found in enumerate(results):
        if isinstance(found, str):
            errors[row, 0] = found.encode()
            continue
        n = min(len(found), MAX_DETECTIONS)  # the post-processing already keeps at most this many
        count[row, 0] = n
        boxes[row, :n], scores[row, :n], class_ids[row, :n] = found.xyxy[:n], found.scores[:n], found.class_ids[:n]
    return {
        NUM_DETECTIONS.name: count,
        BOXES.name: boxes,
        SCORES.name: scores,
        CLASS_IDS.name: class_ids,
        ERROR.name: errors,
    }


def unpack_detections(outputs: dict[str, np.ndarray], class_names: tuple[str, ...] = CLASSES) -> list[Detections]:
    """The output tensors of a batch back into one `Detections` per image."""
    missing = [spec.name for spec in OUTPUTS if spec.name not in outputs]
    if missing:
        raise FacemaskError(f"the server's answer lacks the output(s) {', '.join(missing)}")
    counts = np.asarray(outputs[NUM_DETECTIONS.name]).reshape(-1)
    boxes = np.asarray(outputs[BOXES.name], np.float32).reshape(len(counts), -1, 4)
    scores = np.asarray(outputs[SCORES.name], np.float32).reshape(len(counts), -1)
    class_ids = np.asarray(outputs[CLASS_IDS.name]).reshape(len(counts), -1)
    errors = np.asarray(outputs[ERROR.name], dtype=np.object_).reshape(len(counts))
    results = []
    for row, n in enumerate(counts):
        if errors[row]:
            reason = errors[row].decode(errors="replace") if isinstance(errors[row], bytes) else str(errors[row])
            raise FacemaskError(f"the server refused image {row} of the request: {reason.splitlines()[0]}")
        if not 0 <= n <= boxes.shape[1]:
            raise FacemaskError(
                f"the server's answer says {n} detections for image {row}, outside [0, {boxes.shape[1]}]"
            )
        results.append(Detections(boxes[row, :n], scores[row, :n], class_ids[row, :n], class_names))
    return results
