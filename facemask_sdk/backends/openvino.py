"""OpenVINO backend: the exported `.onnx` model compiled by OpenVINO for an x86 CPU.

OpenVINO reads the ONNX file itself (its metadata, the `ModelSpec`, included: no `onnx` import),
fixes the input to the chosen size and compiles it for the CPU. `precision="auto"` asks for bfloat16
arithmetic where the CPU has it natively (AMX, or AVX-512 BF16: OpenVINO's `BF16` capability) and
float32 elsewhere; a Q/DQ INT8 model (`build-engine --int8 --onnx-only`) runs on its INT8 kernels.

    >>> with OpenVinoRunner("models/facemask.onnx", input_size=640) as runner:
    ...     logits, boxes = runner.run(batch)        # float32 [N, 3, H, W] -> [N, A, C], [N, A, 4]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facemask_sdk.anchors import generate_anchors
from facemask_sdk.backends.base import Runner
from facemask_sdk.errors import FacemaskError, ModelFileError
from facemask_sdk.spec import INPUT_NAME, METADATA_KEY, OUTPUT_NAMES, ModelSpec, spec_from_metadata
from facemask_sdk.stages import HOST
from facemask_sdk.validation import whole_number

PRECISIONS = ("auto", "bf16", "fp32")


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise FacemaskError(
            "the OpenVINO backend needs the 'openvino' package: pip install 'facemask-sdk[openvino]'"
        ) from None
    return openvino


class OpenVinoRunner(Runner):
    """One compiled OpenVINO model with the SDK's guarded lifecycle (`facemask_sdk.lifecycle.Resource`): `run()` until `close()`.

    `threads`: inference threads (default: OpenVINO's choice). `input_size`: as for ONNX Runtime, the
    side the network reads (a model exported with `--dynamic-size` may be compiled at any multiple of
    128). `precision`: "auto" (bf16 where native, see the module docs), "bf16" or "fp32".
    """

    side = HOST
    device_dtypes = (np.dtype(np.float32), np.dtype(np.float32))
    device_ordinal = 0
    batch_size = 1
    """Compiled for one image a call (the latency case); `Detector.detect_batch` chunks by it."""

    def __init__(
        self, model_path: str | Path, threads: int | None = None, input_size: int | None = None, precision: str = "auto"
    ) -> None:
        self._claim()
        self.path = Path(model_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        if precision not in PRECISIONS:
            raise FacemaskError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        openvino = _import_openvino()
        core = openvino.Core()
        try:
            model = core.read_model(str(self.path))
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{self.path} is not a model OpenVINO can read: {reason}") from None
        self.spec = _read_spec(model, self.path)
        dims = model.input(0).get_partial_shape()
        self.dynamic_size = dims.rank.get_length() == 4 and dims[2].is_dynamic and dims[3].is_dynamic
        self.spec = self.spec.read_at(input_size, self.dynamic_size, self.path)
        model.reshape({model.input(0).get_any_name(): [1, 3, *self.spec.image_size]})
        _check_outputs(model, self.spec, self.path)
        if precision == "auto":
            precision = "bf16" if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "fp32"
        self.precision = precision
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = whole_number("threads", threads)
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._outputs = [self._compiled.output(name) for name in OUTPUT_NAMES]  # looked up once, not per image
        self.input_dtype = np.float32
        self.providers = (f"OpenVINO CPU {precision}",)
        self._closed = False

    def _release(self) -> None:
        self._request = None
        self._outputs = []
        self._compiled = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.precision
        return f"OpenVinoRunner({str(self.path)!r}, {self.spec.architecture}, {state})"

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 `[N, 3, H, W]` pre-processed images -> float32 logits `[N, A, C]`, boxes `[N, A, 4]`."""
        self._check_open()
        expected = (3, *self.spec.image_size)
        if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1:] != expected or not len(batch):
            shape = list(batch.shape) if isinstance(batch, np.ndarray) else type(batch).__name__
            raise FacemaskError(f"batch must have shape [N, {', '.join(map(str, expected))}] with N >= 1, got {shape}")
        logits, boxes = [], []
        for image in np.ascontiguousarray(batch, dtype=np.float32):
            result = self._request.infer({0: image[None]})
            logits.append(np.asarray(result[self._outputs[0]], np.float32))
            boxes.append(np.asarray(result[self._outputs[1]], np.float32))
        return np.concatenate(logits), np.concatenate(boxes)


def _read_spec(model, path: Path) -> ModelSpec:
    key = ["framework", METADATA_KEY]
    found = {METADATA_KEY: model.get_rt_info(key).astype(str)} if model.has_rt_info(key) else {}
    return spec_from_metadata(found, path)


def _check_outputs(model, spec: ModelSpec, path: Path) -> None:
    """The graph's tensors must be the export's, with as many anchors as the spec at this size."""
    names = {name for output in model.outputs for name in output.get_names()}
    if INPUT_NAME not in model.input(0).get_names() or any(name not in names for name in OUTPUT_NAMES):
        raise ModelFileError(f"{path}: expected input '{INPUT_NAME}' and outputs {list(OUTPUT_NAMES)}")
    anchors = len(generate_anchors(spec))
    for name, width in zip(OUTPUT_NAMES, (spec.num_classes, 4)):
        shape = model.output(name).get_partial_shape()
        if shape.is_static and list(shape.to_shape())[1:] != [anchors, width]:
            raise ModelFileError(
                f"{path}: output '{name}' has shape {shape}; the model spec says [N, {anchors}, {width}]"
            )
