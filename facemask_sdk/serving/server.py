"""`facemask-sdk serve`: the detector behind Triton's HTTP/gRPC protocol, through PyTriton.

One process: PyTriton starts its bundled tritonserver and binds the detector as model `facemask` with
a dynamic batcher; requests gathered into a batch run through `Detector.detect_batch` (one ONNX
Runtime call when the model's batch axis is dynamic). The outputs follow `protocol`, so the same
client works here and against the generated model repository. SIGTERM and Ctrl-C stop it cleanly.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facemask_sdk.errors import FacemaskError
from facemask_sdk.serving.bundled_server import PYTRITON_MISSING, interpreter_environment
from facemask_sdk.serving.protocol import IMAGE, MAX_DETECTIONS, MODEL_NAME, OUTPUTS, decode_rows, pack_detections
from facemask_sdk.validation import whole_number

LOGGER = logging.getLogger("facemask_sdk.serve")


@dataclass(frozen=True)
class ServeOptions:
    """Where the server listens and how it batches."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    max_batch_size: int = 8
    max_queue_delay_us: int = 2000
    instances: int = 1
    threads: int | None = None
    access_token: str | None = None

    def __post_init__(self) -> None:
        for name in ("http_port", "grpc_port"):
            whole_number(name, getattr(self, name), 1, 65535)
        if self.http_port == self.grpc_port:
            raise FacemaskError(f"the HTTP and gRPC ports must differ (both {self.http_port})")
        whole_number("max_batch_size", self.max_batch_size)
        whole_number("instances", self.instances)


def _import_pytriton():
    try:
        from pytriton.decorators import batch
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig
    except ImportError:
        raise FacemaskError(PYTRITON_MISSING) from None
    return batch, DynamicBatcher, ModelConfig, Tensor, Triton, TritonConfig, TritonSecurityConfig


def make_infer_function(detector) -> Callable[..., dict[str, np.ndarray]]:
    """The batched inference function: `image` `[N, 1]` of encoded bytes -> the protocol's outputs.

    The batch holds several clients' requests, and PyTriton can only fail a batch as a whole: an image
    that cannot be read is answered in its own row (`error`), the others are detected as usual. Anything
    else that fails is logged here in full and reaches the clients as one line, without the server's
    traceback and paths."""

    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        rows = decode_rows(inputs[IMAGE.name])
        try:
            found = iter(detector.detect_batch([row for row in rows if not isinstance(row, str)]))
        except Exception:
            LOGGER.exception("inference failed on a batch of %d image(s)", len(rows))
            raise RuntimeError("the server failed to run the model; its log says why") from None
        return pack_detections([row if isinstance(row, str) else next(found) for row in rows])

    return infer


def serve(
    model: str | Path | None,
    options: ServeOptions,
    score_threshold: float,
    iou_threshold: float,
    on_ready: Callable[[str], None] = print,
) -> None:
    """Serve until SIGTERM or Ctrl-C. `on_ready` gets one line once the model answers."""
    batch, DynamicBatcher, ModelConfig, Tensor, Triton, TritonConfig, TritonSecurityConfig = _import_pytriton()
    from facemask_sdk.detector import Detector

    os.environ.update(interpreter_environment())  # the tritonserver child and its Python stub inherit it
    os.umask(0o077)  # request data passes through shared memory under /dev/shm: this user's only
    logging.getLogger("pytriton").setLevel(logging.WARNING)
    triton_config = TritonConfig(
        http_address=options.host,
        http_port=options.http_port,
        grpc_address=options.host,
        grpc_port=options.grpc_port,
        allow_metrics=False,
    )
    security = TritonSecurityConfig(access_token=options.access_token) if options.access_token else None
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    detectors = []
    try:
        for _ in range(options.instances):
            detectors.append(
                Detector(
                    model,
                    backend="onnxruntime",
                    score_threshold=score_threshold,
                    iou_threshold=iou_threshold,
                    max_detections=MAX_DETECTIONS,
                    threads=options.threads,
                )
            )
        with Triton(config=triton_config, security_config=security) as triton:
            triton.bind(
                model_name=MODEL_NAME,
                infer_func=[batch(make_infer_function(detector)) for detector in detectors],
                inputs=[Tensor(name=IMAGE.name, dtype=bytes, shape=IMAGE.shape)],
                outputs=[Tensor(name=spec.name, dtype=spec.dtype, shape=spec.shape) for spec in OUTPUTS],
                config=ModelConfig(
                    max_batch_size=options.max_batch_size,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=options.max_queue_delay_us),
                ),
                strict=True,
            )
            _restrict_shared_memory(f"pytrtion{os.getpid()}-")
            on_ready(
                f"serving model '{MODEL_NAME}' ({detectors[0].spec.architecture}, {detectors[0].spec.image_size[0]} px, "
                f"{options.instances} instance(s), batches up to {options.max_batch_size}) on "
                f"http://{options.host}:{options.http_port} and grpc {options.host}:{options.grpc_port}; "
                f"ready: GET /v2/models/{MODEL_NAME}/ready; stop with SIGTERM or Ctrl-C"
            )
            triton.serve()
    finally:
        signal.signal(signal.SIGTERM, previous)
        for detector in detectors:
            detector.close()


def _restrict_shared_memory(prefix: str) -> None:
    """Make the shared-memory regions of this server (named `prefix...` under /dev/shm) readable by its
    user only. Triton's Python backend creates them 0644 whatever the umask, and request images pass
    through them; they exist once the model is loaded, before the first request is answered."""
    shm = Path("/dev/shm")
    for region in shm.glob(f"{prefix}*") if shm.is_dir() else ():
        try:
            if region.stat().st_uid == os.getuid():
                region.chmod(0o600)
        except OSError:  # a region that went away meanwhile
            continue


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the shutdown
    raise KeyboardInterrupt  # PyTriton's serve loop stops the server on it
