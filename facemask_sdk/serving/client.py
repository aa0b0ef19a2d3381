"""A gRPC client of a facemask server (`facemask-sdk serve` or the generated Triton repository).

    >>> with TritonClient("127.0.0.1:8001") as client:
    ...     detections = client.detect("samples/images/maksssksksss7.png")   # -> Detections

One client is safe to share across threads (gRPC; tritonclient's HTTP client is not). Every call has a
timeout; a server that does not answer, or answers with an error, raises `FacemaskError` with one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from facemask_sdk.detections import Detections
from facemask_sdk.errors import FacemaskError
from facemask_sdk.image_io import to_bgr8
from facemask_sdk.serving.protocol import IMAGE, MODEL_NAME, OUTPUTS, encode_request, unpack_detections
from facemask_sdk.spec import CLASSES
from facemask_sdk.validation import positive, whole_number

ClientImage = str | os.PathLike | bytes | np.ndarray
"""A path, encoded image bytes, or a BGR uint8 array (sent PNG-encoded, so lossless)."""


def _grpc():
    try:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException
    except ImportError:
        raise FacemaskError(
            "the Triton client needs 'tritonclient[grpc]': pip install 'facemask-sdk[client]'"
        ) from None
    return grpcclient, InferenceServerException


def encode_image(image: ClientImage) -> bytes:
    """The bytes a request carries: a file's own bytes, bytes as given, an array as PNG."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        return path.read_bytes()
    ok, encoded = cv2.imencode(".png", to_bgr8(image))
    if not ok:
        raise FacemaskError("could not encode the image as PNG")
    return encoded.tobytes()


class TritonClient:
    """Detections from a server over gRPC. `url` is host:port of its gRPC endpoint; `timeout_s` bounds
    each call; `access_token` is sent when the server restricts endpoints (PyTriton's);
    `max_batch_size` (the servers' default, 8) splits longer `detect_batch` lists into requests."""

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        model_name: str = MODEL_NAME,
        timeout_s: float = 10.0,
        access_token: str | None = None,
        class_names: tuple[str, ...] = CLASSES,
        max_batch_size: int = 8,
    ) -> None:
        positive("timeout_s", timeout_s)
        self.max_batch_size = whole_number("max_batch_size", max_batch_size)
        grpcclient, self._server_error = _grpc()
        self._grpc = grpcclient
        self.url, self.model_name, self.timeout_s, self.class_names = url, model_name, timeout_s, class_names
        self._headers = {"triton-grpc-protocol-triton-access-token": access_token} if access_token else None
        try:
            self._client = grpcclient.InferenceServerClient(url=url)
        except Exception as exc:  # tritonclient raises plain exceptions for malformed URLs
            raise FacemaskError(f"cannot create a gRPC client for {url!r}: {exc}") from None

    def is_ready(self) -> bool:
        """Whether the server answers and its model is ready (False when nothing listens)."""
        try:
            return bool(
                self._client.is_model_ready(self.model_name, headers=self._headers, client_timeout=self.timeout_s)
            )
        except self._server_error:
            return False

    def batching(self, model_name: str | None = None) -> tuple[int, int]:
        """(images inferred, executions) of a model since the server started: fewer executions than
        images means the dynamic batcher grouped requests. Needs the access token on PyTriton."""
        name = model_name or self.model_name
        try:
            stats = self._client.get_inference_statistics(name, headers=self._headers, client_timeout=self.timeout_s)
        except self._server_error as exc:
            raise FacemaskError(f"the server at {self.url} {_reason(exc)}") from None
        found = [entry for entry in stats.model_stats if entry.name == name]
        if not found:
            raise FacemaskError(f"the server at {self.url} has no statistics for model {name!r}")
        return int(found[0].inference_count), int(found[0].execution_count)

    def detect(self, image: ClientImage) -> Detections:
        """Detections of one image, in its own pixels."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[ClientImage]) -> list[Detections]:
        """Detections of several images, sent `max_batch_size` per request (the server may batch further)."""
        images = list(images)
        return [
            found
            for start in range(0, len(images), self.max_batch_size)
            for found in self._request(images[start : start + self.max_batch_size])
        ]

    def _request(self, images: list[ClientImage]) -> list[Detections]:
        batch = encode_request([encode_image(image) for image in images])
        request = self._grpc.InferInput(IMAGE.name, list(batch.shape), "BYTES")
        request.set_data_from_numpy(batch)
        outputs = [self._grpc.InferRequestedOutput(spec.name) for spec in OUTPUTS]
        try:
            result = self._client.infer(
                self.model_name, [request], outputs=outputs, headers=self._headers, client_timeout=self.timeout_s
            )
        except self._server_error as exc:
            raise FacemaskError(f"the server at {self.url} {_reason(exc)}") from None
        return unpack_detections({spec.name: result.as_numpy(spec.name) for spec in OUTPUTS}, self.class_names)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_RAISED = re.compile(r"^[\w.]*(?:Error|Exception): (.+)$")


def _reason(exc: Exception) -> str:
    """What went wrong, as the end of a sentence that starts with the server's address."""
    status = str(getattr(exc, "status", lambda: None)() or "")
    lines = (getattr(exc, "message", lambda: None)() or str(exc)).strip().splitlines()
    raised = [match.group(1) for line in lines if (match := _RAISED.match(line))]
    text = raised[-1] if raised else (lines[0] if lines else type(exc).__name__)  # a server traceback's last word
    if "UNAVAILABLE" in status:
        return f"does not answer (is it running?): {text}"
    if "DEADLINE" in status:
        return f"gave no answer within the timeout: {text}"
    return f"refused the request: {text}"
