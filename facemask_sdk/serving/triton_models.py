"""Triton Python-backend models of the generated repository: thin adapters around the SDK's own code.

Each repository model's `model.py` is one line that imports a class from here, so the server runs the
installed SDK (`preprocess`, `postprocess`, `closeups`, `OnnxRuntimeRunner`) rather than a copy. Only
Triton's Python stub imports this module (it provides `triton_python_backend_utils`). A bad request gets its
own error response; the other requests of its batch are answered normally.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facemask_sdk.closeups import CloseupCheck, check_closeups, shrink_frames
from facemask_sdk.detections import Detections
from facemask_sdk.errors import FacemaskError
from facemask_sdk.image_io import decode_image
from facemask_sdk.postprocess import PostprocessConfig
from facemask_sdk.preprocess import Letterbox, preprocess
from facemask_sdk.serving.protocol import IMAGE, MODEL_NAME, decode_request, pack_detections, request_images
from facemask_sdk.spec import INPUT_NAME, OUTPUT_NAMES, ModelSpec
from facemask_sdk.stages import NumpyPostprocess

PREPROCESS, NETWORK, POSTPROCESS = (f"{MODEL_NAME}_{step}" for step in ("preprocess", "network", "postprocess"))
"""The repository's models besides the `MODEL_NAME` ensemble; the post-processing sends NETWORK its second pass."""
LETTERBOX = "letterbox"
"""The ensemble's tensor from pre- to post-processing: `Letterbox.as_array()`."""
SPEC_FILE = "spec.json"
POSTPROCESS_FILE = "postprocess.json"
CLOSEUP_FILE = "closeup_check.json"
"""The post-processing step's close-up check: `{"check": CloseupCheck fields or null}`; a repository written
before the check existed has no such file and runs without it."""


def _utils():
    import triton_python_backend_utils  # provided by Triton's Python stub only

    return triton_python_backend_utils


def _version_dir(args: dict) -> Path:
    return Path(args["model_repository"]) / str(args["model_version"])


def _error_response(pb_utils, exc: Exception, code_name: str = "INVALID_ARG"):
    """The request's own error: INVALID_ARGUMENT for the client's mistake, INTERNAL for the server's (error
    codes exist in Triton's Python stub since 23.09; older stubs answer INTERNAL with the same one line)."""
    code = getattr(pb_utils.TritonError, code_name, None)
    error = pb_utils.TritonError(str(exc), code) if code is not None else pb_utils.TritonError(str(exc))
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


class SecondPassError(RuntimeError):
    """The close-up check's network request failed: the server's fault, not the request's."""


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
    """Raw head outputs and letterbox geometry -> the contract's fixed-size detections, with the `Detector`'s
    close-up check (`facemask_sdk.closeups`) where the repository has it: the frames with a large confident
    face are decoded again, shrunk, and run through the ensemble's network model once more by a BLS request.
    Every input of this step comes from the server (the images were read by the pre-processing already), so
    any failure here is the server's: INTERNAL, for its own request only."""

    def initialize(self, args: dict) -> None:
        folder = _version_dir(args)
        self.spec = ModelSpec.from_json((folder / SPEC_FILE).read_text())
        self.postprocess = NumpyPostprocess(
            self.spec, PostprocessConfig(**json.loads((folder / POSTPROCESS_FILE).read_text()))
        )
        check_file = folder / CLOSEUP_FILE
        check = json.loads(check_file.read_text())["check"] if check_file.is_file() else None
        self.check = CloseupCheck(**check) if check else None

    def execute(self, requests: list) -> list:
        pb_utils = _utils()
        responses = []
        for request in requests:
            try:
                logits = pb_utils.get_input_tensor_by_name(request, OUTPUT_NAMES[0]).as_numpy()
                boxes = pb_utils.get_input_tensor_by_name(request, OUTPUT_NAMES[1]).as_numpy()
                geometry = pb_utils.get_input_tensor_by_name(request, LETTERBOX).as_numpy()
                letterboxes = [Letterbox.from_array(row) for row in geometry]
                results = [self.postprocess((logits[row], boxes[row]), letterboxes[row]) for row in range(len(logits))]
                if self.check is not None:
                    results = self._checked(pb_utils, request, results, letterboxes)
                outputs = pack_detections(results)
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[pb_utils.Tensor(name, array) for name, array in outputs.items()]
                    )
                )
            except Exception as exc:  # noqa: BLE001  (answered as this request's error; the batch goes on)
                responses.append(_error_response(pb_utils, _one_line(exc), "INTERNAL"))
        return responses

    def _checked(self, pb_utils, request, results: list[Detections], letterboxes: list[Letterbox]) -> list[Detections]:
        """`results` with the close-up check; only the images of the frames that need it are decoded again."""

        def detect_shrunk(indices: list[int]) -> list[Detections]:
            images = pb_utils.get_input_tensor_by_name(request, IMAGE.name)
            if images is None:
                raise SecondPassError(f"the close-up check needs the request's '{IMAGE.name}' input")
            encoded = request_images(images.as_numpy())
            frames = [decode_image(encoded[i], source=f"image {i} of the request") for i in indices]
            prepared = [preprocess(frame, self.spec) for frame in shrink_frames(frames, self.check, self.spec.mean)]
            logits, boxes = self._network(pb_utils, np.stack([chw for chw, _ in prepared]))
            return [
                self.postprocess((logits[row], boxes[row]), letterbox) for row, (_, letterbox) in enumerate(prepared)
            ]

        return check_closeups(results, [box.original_hw for box in letterboxes], detect_shrunk, self.check)

    def _network(self, pb_utils, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ensemble's network model on `inputs` (a BLS request, batched with the other requests by its
        dynamic batcher); its outputs asked for in CPU memory where the stub can ask (a GPU network answers in
        GPU memory otherwise, which `as_numpy` cannot read)."""
        memory = {}
        if hasattr(pb_utils, "PreferredMemory"):
            memory["preferred_memory"] = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)
        response = pb_utils.InferenceRequest(
            model_name=NETWORK,
            requested_output_names=list(OUTPUT_NAMES),
            inputs=[pb_utils.Tensor(INPUT_NAME, inputs)],
            **memory,
        ).exec()
        if response.has_error():
            raise SecondPassError(f"the close-up check's second pass failed: {response.error().message()}")
        tensors = [pb_utils.get_output_tensor_by_name(response, name) for name in OUTPUT_NAMES]
        if not all(tensor.is_cpu() for tensor in tensors):
            raise SecondPassError(
                "the close-up check's second pass answered in GPU memory: it needs a Triton whose Python backend "
                "can ask for CPU memory (23.04 or later), or a repository written with --no-closeup-check"
            )
        logits, boxes = (tensor.as_numpy() for tensor in tensors)
        return logits, boxes


def _one_line(exc: Exception) -> Exception:
    """`exc` as it reaches a client: one line, named by its type where it is not one of ours."""
    if isinstance(exc, (FacemaskError, SecondPassError)):
        return exc
    return RuntimeError(f"{type(exc).__name__}: {' '.join(str(exc).split())}")
