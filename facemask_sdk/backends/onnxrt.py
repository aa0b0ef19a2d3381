"""ONNX Runtime backend: runs an exported `.onnx` model on a batch of pre-processed images.

The model's `ModelSpec` is read from the file's own metadata through ONNX Runtime (no `onnx`
import). The CUDA provider is used when this onnxruntime build offers it, else the CPU. FP16 models
(input `tensor(float16)`) get their input cast and their outputs returned as float32.

    >>> with OnnxRuntimeRunner("models/facemask.onnx") as runner:
    ...     logits, boxes = runner.run(batch)        # float32 [N, 3, H, W] -> [N, A, C], [N, A, 4]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facemask_sdk.anchors import generate_anchors
from facemask_sdk.backends.base import Runner
from facemask_sdk.errors import FacemaskError, ModelFileError
from facemask_sdk.spec import OUTPUT_NAMES, ModelSpec, spec_from_metadata
from facemask_sdk.stages import HOST
from facemask_sdk.validation import whole_number

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise FacemaskError(
            "the ONNX Runtime backend needs the 'onnxruntime' package (or 'onnxruntime-gpu'): "
            "pip install 'facemask-sdk[onnx]'"
        ) from None
    return onnxruntime


class OnnxRuntimeRunner(Runner):
    """One ONNX Runtime session with the SDK's guarded lifecycle (`facemask_sdk.lifecycle.Resource`): `run()` until `close()`.

    `providers`: ONNX Runtime execution providers in order of preference (default: CUDA if available,
    then CPU). `threads`: intra-op threads (default: ONNX Runtime's choice). `input_size`: the side the
    network reads, for a model exported with a dynamic input size (`export --dynamic-size`); anchors and
    letterbox follow it through `spec`. Default: the size the model was trained at.
    """

    side = HOST
    device_dtypes = (np.dtype(np.float32), np.dtype(np.float32))
    """The host arrays it takes and gives (it casts for an FP16 model): device buffers next to it use these."""
    device_ordinal = 0
    """The GPU of CUDA stages next to it (ONNX Runtime's own CUDA provider chooses its device itself)."""

    def __init__(
        self,
        model_path: str | Path,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        input_size: int | None = None,
    ) -> None:
        self._claim()
        self.path = Path(model_path)
        if not self.path.exists():
            raise FileNotFoundError(f"model file not found: {self.path}")
        if not self.path.is_file():
            raise ModelFileError(f"model path is not a file: {self.path}")
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = whole_number("threads", threads)
        chosen = _choose_providers(ort.get_available_providers(), providers)
        self._session = self._open(ort, options, chosen)
        self.spec = _read_spec(self._session, self.path)
        self.dynamic_size = _has_dynamic_size(self._session)
        """Whether the graph takes any input size (multiples of 128): `input_size` may then be chosen."""
        self.spec = self.spec.read_at(input_size, self.dynamic_size, self.path)
        overrides = _size_overrides(self._session, self.spec.image_size) if self.dynamic_size else {}
        if overrides:
            # The runner reads one size only (`_check_batch`): pinning the graph's free height and width to it lets
            # ONNX Runtime plan every shape when it loads (measured on a 2-core AMD EPYC, the shipped model's
            # network at 768 px, the two sessions interleaved: 121 -> 104 ms p50, level with a fixed-size export).
            for name, value in overrides.items():
                options.add_free_dimension_override_by_name(name, value)
            self._session = None  # released first: never two copies of the model in memory
            self._session = self._open(ort, options, chosen)
        self.size_pinned = bool(overrides)
        """Whether the session runs the dynamic-size graph pinned to `spec.image_size`."""
        self.providers: list[str] = list(self._session.get_providers())
        self.input_name, self.input_dtype, self.batch_size = _check_io(self._session, self.spec, self.path)
        if not _heads_declare_anchor_count(self._session):
            self._check_heads_by_running(ort)
        self._closed = False

    def _open(self, ort, options, providers: list[str]):
        try:
            return ort.InferenceSession(
                str(self.path), sess_options=options, providers=providers, disabled_optimizers=DISABLED_OPTIMIZERS
            )
        except _model_errors(ort) as exc:
            raise ModelFileError(f"{self.path} is not a loadable ONNX model: {_first_line(exc)}") from None

    def _check_heads_by_running(self, ort) -> None:
        """A graph whose heads declare no anchor count (a dynamic-size export whose shapes ONNX Runtime cannot
        infer) is run once, at the size it is pinned to, or else at the smallest size it takes (128 px for a
        dynamic size: a few ms), to see whether its heads are the spec's: a wrong model is refused at load rather
        than answering with garbage."""
        small = self.dynamic_size and not self.size_pinned
        spec = self.spec.at_input_size(2**self.spec.anchors.max_level) if small else self.spec
        side = spec.image_size[0]
        batch = np.zeros((self.batch_size or 1, 3, *spec.image_size), self.input_dtype)
        try:
            outputs = self._run(batch)
        except _model_errors(ort) as exc:
            raise ModelFileError(f"{self.path}: fails a {side} px test run: {_first_line(exc)}") from None
        anchors = len(generate_anchors(spec))
        for name, width, output in zip(OUTPUT_NAMES, (self.spec.num_classes, 4), outputs):
            if output.shape != (len(batch), anchors, width):
                raise ModelFileError(
                    f"{self.path}: output '{name}' has shape {list(output.shape)} at {side} px; the model spec says "
                    f"[N, {anchors}, {width}]"
                )

    # -- lifecycle (the rest is `Resource`'s) -----------------------------------------------------

    def _release(self) -> None:
        self._session = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else ", ".join(self.providers)
        return f"OnnxRuntimeRunner({str(self.path)!r}, {self.spec.architecture}, {state})"

    # -- inference ---------------------------------------------------------------------------------

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 `[N, 3, H, W]` pre-processed images -> float32 logits `[N, A, C]`, boxes `[N, A, 4]`.

        A model with a static batch size runs the images in chunks of that size.
        """
        self._check_open()
        batch = self._check_batch(batch)
        if self.batch_size is None or len(batch) == self.batch_size:
            return self._run(batch)
        step = self.batch_size
        logits, boxes = [], []
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            count = len(chunk)
            if count < step:  # pad the last chunk of a static batch > 1 model
                chunk = np.concatenate([chunk, np.zeros((step - count, *chunk.shape[1:]), chunk.dtype)])
            out_logits, out_boxes = self._run(chunk)
            logits.append(out_logits[:count])
            boxes.append(out_boxes[:count])
        return np.concatenate(logits), np.concatenate(boxes)

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, boxes = self._session.run(list(OUTPUT_NAMES), {self.input_name: batch})
        return np.asarray(logits, dtype=np.float32), np.asarray(boxes, dtype=np.float32)

    def _check_batch(self, batch: object) -> np.ndarray:
        if not isinstance(batch, np.ndarray):
            raise FacemaskError(f"batch must be a numpy array, got {type(batch).__name__}")
        expected = (3, *self.spec.image_size)
        if batch.ndim != 4 or batch.shape[1:] != expected or batch.shape[0] == 0:
            raise FacemaskError(
                f"batch must have shape [N, {', '.join(map(str, expected))}] with N >= 1, got {list(batch.shape)}"
            )
        if batch.dtype.kind != "f":
            raise FacemaskError(f"batch must be a float array (pre-processed images), got dtype {batch.dtype}")
        return np.ascontiguousarray(batch, dtype=self.input_dtype)


DISABLED_OPTIMIZERS = ["WeightBiasQuantization"]
"""ORT's CPU provider would re-quantise the float Conv biases of a Q/DQ graph (FP16 elsewhere, as
`build-engine --int8` writes it for TensorRT) to INT32 with an FP16 scale, losing most of the accuracy;
TensorRT keeps those biases in float, and so do we."""


def _choose_providers(available: Sequence[str], requested: Sequence[str] | None) -> list[str]:
    if requested is None:
        return [p for p in _PREFERRED_PROVIDERS if p in available] or list(available)
    if isinstance(requested, str):
        requested = [requested]
    requested = list(requested)
    missing = [p for p in requested if p not in available]
    if not requested or missing:
        raise FacemaskError(
            f"ONNX Runtime providers {missing or requested} are not available; this onnxruntime offers "
            f"{', '.join(available)}"
        )
    return requested


def _read_spec(session, path: Path) -> ModelSpec:
    return spec_from_metadata(session.get_modelmeta().custom_metadata_map, path)


def _model_errors(ort) -> tuple[type[Exception], ...]:
    """What onnxruntime raises for a model file that cannot be loaded or run (its own exception types)."""
    state = ort.capi.onnxruntime_pybind11_state
    return (
        state.InvalidProtobuf,
        state.InvalidGraph,
        state.InvalidArgument,
        state.NoSuchFile,
        state.NotImplemented,
        state.Fail,
        state.RuntimeException,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _heads_declare_anchor_count(session) -> bool:
    """Whether both heads' shapes give the anchor count (dimension 1) as a number, so `_check_io` can check it."""
    heads = [o for o in session.get_outputs() if o.name in OUTPUT_NAMES]
    return all(len(o.shape) == 3 and isinstance(o.shape[1], int) for o in heads)


def _has_dynamic_size(session) -> bool:
    shape = list(session.get_inputs()[0].shape)
    return len(shape) == 4 and not isinstance(shape[2], int) and not isinstance(shape[3], int)


def _size_overrides(session, image_size: tuple[int, int]) -> dict[str, int]:
    """{symbolic name: pixels} that pin the input's free height and width to `image_size` (`export
    --dynamic-size` names them); empty where a dimension has no name to pin it by."""
    overrides: dict[str, int] = {}
    for name, value in zip(list(session.get_inputs()[0].shape)[2:], image_size):
        if not isinstance(name, str) or not name or overrides.get(name, value) != value:
            return {}
        overrides[name] = int(value)
    return overrides


def _check_io(session, spec: ModelSpec, path: Path) -> tuple[str, type, int | None]:
    """(input name, input numpy dtype, static batch size or None) after checking the graph's I/O."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelFileError(f"{path}: expected one input (images), found {[i.name for i in inputs]}")
    image_input = inputs[0]
    shape = list(image_input.shape)
    expected = [3, *spec.image_size]
    if len(shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], expected)):
        raise ModelFileError(
            f"{path}: input '{image_input.name}' has shape {shape}; "
            f"the model spec says [N, {', '.join(map(str, expected))}]"
        )
    if image_input.type not in _DTYPES:
        raise ModelFileError(
            f"{path}: input '{image_input.name}' has type {image_input.type}; expected tensor(float) or tensor(float16)"
        )
    outputs = {o.name: o for o in session.get_outputs()}
    if any(name not in outputs for name in OUTPUT_NAMES):
        raise ModelFileError(f"{path}: expected outputs {list(OUTPUT_NAMES)}, found {list(outputs)}")
    # a graph with the right input but other heads would answer with garbage: its static sizes must match
    anchors = len(generate_anchors(spec))
    for name, width in zip(OUTPUT_NAMES, (spec.num_classes, 4)):
        declared = list(outputs[name].shape)
        wanted = [None, anchors, width]
        if len(declared) != 3 or any(isinstance(d, int) and w is not None and d != w for d, w in zip(declared, wanted)):
            raise ModelFileError(
                f"{path}: output '{name}' has shape {declared}; the model spec says [N, {anchors}, {width}]"
            )
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    return image_input.name, _DTYPES[image_input.type], batch
