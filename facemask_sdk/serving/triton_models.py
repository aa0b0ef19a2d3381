"""Triton Python-backend models of the generated repository: thin adapters around the SDK's own code.

Each repository model's `model.py` is one line that imports a class from here, so the server runs the
installed SDK (`preprocess`, `postprocess`, `OnnxRuntimeRunner`) rather than a copy. Only Triton's
Python stub imports this module (it provides `triton_python_backend_utils`). A bad request gets its own
error response; the other requests of its batch are answered normally.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facemask_sdk.anchors import generate_anchors
from facemask_sdk.errors import FacemaskError
from facemask_sdk.postprocess import PostprocessConfig, postprocess_detections
from facemask_sdk.preprocess import Letterbox, preprocess
from facemask_sdk.serving.protocol import IMAGE, decode_request, pack_detections
from facemask_sdk.spec import INPUT_NAME, OUTPUT_NAMES, ModelSpec

LETTERBOX = "letterbox"
"""The ensemble's tensor from pre- to post-processing: `Letterbox.as_array()`."""
SPEC_FILE = "spec.json"
POSTPROCESS_FILE = "postprocess.json"


def _utils():
    import triton_python_backend_utils  # provided by Triton's Python stub only

    return triton_python_backend_utils


def _version_dir(args: dict) -> Path:
    return Path(args["model_repository"]) / str(args["model_version"])


def _error_response(pb_utils, exc: Exception):
    """The request's own error, as INVALID_ARGUMENT (error codes exist in Triton's Python stub since 23.09;
    older stubs answer INTERNAL with the same one line)."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    error = pb_utils.TritonError(str(exc), code) if code is not None else pb_utils.TritonError(str(exc))
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


class PreprocessModel:
    """Encoded images `[N, 1]` -> network input `[N, 3, H, W]` and letterbox geometry `[N, 5]`."""

    def initialize(self, args: dict) -> None:
        self.spec = ModelSpec.from_json((_version_dir(args) / SPEC_FILE).read_text())

    def execute(self, requests: list) -> list:
        pb_utils = _utils()
        responses = []
        for request in requests:
            try:
                frames = decode_request(pb_utils.get_input_tensor_by_name(request, IMAGE.name).as_numpy())
                prepared = [preprocess(frame, self.spec) for frame in frames]
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[
                            pb_utils.Tensor(INPUT_NAME, np.stack([chw for chw, _ in prepared])),
                            pb_utils.Tensor(LETTERBOX, np.stack([letterbox.as_array() for _, letterbox in prepared])),
                        ]
                    )
                )
            except (FacemaskError, ValueError) as exc:
                responses.append(_error_response(pb_utils, exc))
        return responses


class NetworkModel:
    """The network on ONNX Runtime, for servers without the onnxruntime backend (PyTriton's bundled
    tritonserver): the dynamic batcher's requests run as one batch, as `onnxruntime_onnx` would."""

    def initialize(self, args: dict) -> None:
        from facemask_sdk.backends.onnxrt import OnnxRuntimeRunner

        config = json.loads(args["model_config"])
        threads = int(config.get("parameters", {}).get("threads", {}).get("string_value", "0")) or None
        self.runner = OnnxRuntimeRunner(_version_dir(args) / "model.onnx", threads=threads)

    def execute(self, requests: list) -> list:
        pb_utils = _utils()
        inputs = [pb_utils.get_input_tensor_by_name(request, INPUT_NAME).as_numpy() for request in requests]
        logits, boxes = self.runner.run(np.concatenate(inputs))
        responses, start = [], 0
        for batch in inputs:
            rows = slice(start, start + len(batch))
            start += len(batch)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor(OUTPUT_NAMES[0], np.ascontiguousarray(logits[rows])),
                        pb_utils.Tensor(OUTPUT_NAMES[1], np.ascontiguousarray(boxes[rows])),
                    ]
                )
            )
        return responses

    def finalize(self) -> None:
        self.runner.close()


class PostprocessModel:
    """Raw head outputs and letterbox geometry -> the contract's fixed-size detections."""

    def initialize(self, args: dict) -> None:
        folder = _version_dir(args)
        self.spec = ModelSpec.from_json((folder / SPEC_FILE).read_text())
        self.config = PostprocessConfig(**json.loads((folder / POSTPROCESS_FILE).read_text()))
        self.anchors = generate_anchors(self.spec)

    def execute(self, requests: list) -> list:
        pb_utils = _utils()
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, OUTPUT_NAMES[0]).as_numpy()
            boxes = pb_utils.get_input_tensor_by_name(request, OUTPUT_NAMES[1]).as_numpy()
            geometry = pb_utils.get_input_tensor_by_name(request, LETTERBOX).as_numpy()
            outputs = pack_detections(
                [
                    postprocess_detections(
                        logits[row],
                        boxes[row],
                        self.anchors,
                        Letterbox.from_array(geometry[row]),
                        self.config,
                        self.spec.classes,
                    )
                    for row in range(len(logits))
                ]
            )
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, array) for name, array in outputs.items()]
                )
            )
        return responses
