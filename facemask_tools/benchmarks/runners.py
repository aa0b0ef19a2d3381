"""One adapter over every runner the benchmark compares.

A runner is described by a `RunnerSpec` (plain data, so a worker subprocess can rebuild it) and
used through `BenchRunner` (the SDK's lifecycle, `facemask_sdk.lifecycle.Resource`):

    >>> runner = make_runner(RunnerSpec("ort-cpu-fp32", "onnxruntime", "fp32", "cpu", "models/facemask.onnx"))
    >>> runner.available()                 # cheap checks only: files, packages, providers
    (True, '')
    >>> with runner.open(score_threshold=0.4):
    ...     boxes, scores, class_ids = runner(image_bgr)
    ...     runner.last_timing             # preprocess_ms, inference_ms, postprocess_ms
    ...     results = runner.detect_batch([image_bgr] * 8)   # where supports_batch(8)

`discover_runners` lists every candidate in a fixed order, available or not; the harness skips the
unavailable ones with the reason `available()` gives. Heavy libraries (torch, onnxruntime,
tensorrt) are imported only by `open()`.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from facemask_sdk.errors import FacemaskError
from facemask_sdk.lifecycle import Resource
from facemask_sdk.metrics import EVAL_IOU_THRESHOLD, EVAL_MAX_DETECTIONS, EVAL_SCORE_THRESHOLD  # noqa: F401 (re-exported)
from facemask_sdk.models import variant_path
from facemask_sdk.stages import STAGE_TIMINGS

Prediction = tuple[np.ndarray, np.ndarray, np.ndarray]
"""float32 `[N, 4]` xyxy boxes (original-image pixels), float32 `[N]` scores, int64 `[N]` class ids."""

BASELINE = "pytorch-cpu-fp32"
"""The runner every speed-up and accuracy difference is computed against."""

SPEED_SCORE_THRESHOLD = 0.4
"""Default score threshold of the timed passes: the SDK's own default, i.e. what a deployment runs."""

FP16_CPU_NOTE = (
    "ONNX Runtime's CPU provider has few FP16 kernels: it runs most nodes in FP32 behind inserted "
    "casts, so this row measures the FP16 file's accuracy, not an FP16 speed-up"
)


class RunnerUnavailable(FacemaskError):
    """Raised by `BenchRunner.open()` when a check that needs the heavy library fails (e.g. no CUDA device)."""


@dataclass(frozen=True)
class RunnerSpec:
    """What to run: `backend` is pytorch, onnxruntime or tensorrt; `path` a checkpoint, .onnx or .engine."""

    name: str
    backend: str
    precision: str
    device: str
    path: str
    threads: int | None = None
    baseline: bool = False
    note: str = ""
    input_size: int | None = None
    """The side the network reads (a dynamic-size ONNX); None: the size the model was trained at."""
    speed_only: bool = False
    """A peer detector of another task: timed like the others, its boxes not scored on this data."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunnerSpec:
        return cls(**data)


class BenchRunner(Resource):
    """Base adapter: the SDK's guarded lifecycle (closed until `open()`, then `close()` / `with`), uniform
    outputs and stage timings. Subclasses say whether they can run here and load their model."""

    closed_hint = "call open() or use it in a with block"

    def __init__(self, spec: RunnerSpec) -> None:
        self.spec = spec
        self.last_timing: dict[str, float] = {}
        self._impl = None

    name = property(lambda self: self.spec.name)
    backend = property(lambda self: self.spec.backend)
    precision = property(lambda self: self.spec.precision)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.spec.path!r}, {'closed' if self.closed else 'open'})"

    def _label(self) -> str:
        return f"bench runner {self.name}"

    # -- lifecycle ---------------------------------------------------------------------------------

    def available(self) -> tuple[bool, str]:
        """(True, "") when this runner can be tried here, else (False, why); imports nothing heavy."""
        raise NotImplementedError

    def open(self, score_threshold: float = SPEED_SCORE_THRESHOLD) -> BenchRunner:
        """Load the model; detections scoring at or below `score_threshold` are dropped."""
        self.close()
        self._claim()
        self._impl = self._load(score_threshold)
        self._closed = False
        return self

    def _load(self, score_threshold: float):
        """The loaded model: an object with `detect_batch`, `last_timing` and (optionally) `close()`."""
        raise NotImplementedError

    def _release(self) -> None:
        impl, self._impl = self._impl, None
        if impl is not None and hasattr(impl, "close"):
            impl.close()

    def __enter__(self) -> BenchRunner:
        if self.closed:
            self.open()
        return self

    # -- inference ---------------------------------------------------------------------------------

    def __call__(self, image: np.ndarray) -> Prediction:
        """Detections of one BGR uint8 image; `last_timing` holds this call's three stages in ms."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """One call for several images (one network batch where `supports_batch`); stages summed."""
        self._check_open()
        detections = self._impl.detect_batch(list(images))
        timing = self._impl.last_timing
        self.last_timing = {stage: float(timing[stage]) for stage in STAGE_TIMINGS}
        return [(d.xyxy, d.scores, d.class_ids) for d in detections]

    def supports_batch(self, size: int) -> tuple[bool, str]:
        """Whether `detect_batch` of `size` images is one network batch (else: why not)."""
        return True, ""

    def info(self) -> dict:
        """Facts for the report (providers, threads, ...), once open."""
        return {}


class TorchBenchRunner(BenchRunner):
    """effdet's `DetBenchPredict` on a checkpoint (`facemask_tools.training.baseline.TorchRunner`): the baseline.

    Its inference stage includes effdet's own top-k, decoding and NMS (they run inside the forward);
    its post-processing stage only converts the rows to arrays.
    """

    def available(self) -> tuple[bool, str]:
        missing = [m for m in ("torch", "effdet") if importlib.util.find_spec(m) is None]
        if missing:
            return False, f"needs {' and '.join(missing)} (pip install 'facemask-sdk[train]')"
        if not Path(self.spec.path).is_file():
            return False, f"no checkpoint {self.spec.path} (pass --checkpoint)"
        if self.spec.device == "cuda" and not has_nvidia_gpu():
            return False, "no NVIDIA GPU (nvidia-smi not found)"
        return True, ""

    def _load(self, score_threshold: float):
        import torch

        from facemask_tools.training.baseline import TorchRunner as EffdetRunner

        if self.spec.device == "cuda" and not torch.cuda.is_available():
            raise RunnerUnavailable(f"torch {torch.__version__} sees no CUDA device")
        if self.spec.threads is not None:
            torch.set_num_threads(self.spec.threads)
        return EffdetRunner(
            self.spec.path,
            device=self.spec.device,
            score_threshold=score_threshold,
            max_detections=EVAL_MAX_DETECTIONS,
        )

    def info(self) -> dict:
        import torch

        facts = {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads()}
        if self._impl is not None:
            facts["image_size"] = list(self._impl.spec.image_size)
            facts["architecture"] = self._impl.spec.architecture
            facts["classes"] = list(self._impl.spec.classes)
            facts["nms_iou"] = "0.5 (effdet fixed)"
        return facts


class DetectorBenchRunner(BenchRunner):
    """`facemask_sdk.Detector` on an `.onnx` (ONNX Runtime, CPU or CUDA provider) or `.engine` file."""

    def available(self) -> tuple[bool, str]:
        path = Path(self.spec.path)
        if not path.is_file():
            return False, f"no {path}" + (f" ({self.spec.note})" if self.spec.note else "")
        if self.backend == "tensorrt":
            missing = [m for m in ("tensorrt", "pycuda") if importlib.util.find_spec(m) is None]
            if missing:
                return False, f"needs {' and '.join(missing)} and an NVIDIA GPU"
            if not has_nvidia_gpu():
                return False, "no NVIDIA GPU (nvidia-smi not found)"
            return True, ""
        if self.backend == "openvino":
            if importlib.util.find_spec("openvino") is None:
                return False, "needs openvino (pip install 'facemask-sdk[openvino]')"
            return True, ""
        if importlib.util.find_spec("onnxruntime") is None:
            return False, "needs onnxruntime (pip install 'facemask-sdk[onnx]')"
        if self.spec.device == "cuda":
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                return False, (
                    f"this onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider "
                    f"(install onnxruntime-gpu on a machine with an NVIDIA GPU)"
                )
        return True, ""

    def _load(self, score_threshold: float):
        from facemask_sdk.detector import Detector

        options = {}
        if self.backend == "onnxruntime":
            provider = "CUDAExecutionProvider" if self.spec.device == "cuda" else "CPUExecutionProvider"
            options = {"providers": [provider], "threads": self.spec.threads}
        if self.backend == "openvino":
            options = {"threads": self.spec.threads}
        # effdet's class-aware NMS, as the PyTorch baseline: the bench compares backends and precisions
        # at equal post-processing (the product's one-box-per-face figures are in the model card)
        detector = Detector(
            self.spec.path,
            backend=self.backend,
            score_threshold=score_threshold,
            iou_threshold=EVAL_IOU_THRESHOLD,
            max_detections=EVAL_MAX_DETECTIONS,
            class_agnostic=False,
            input_size=self.spec.input_size,
            **options,
        )
        if self.spec.device == "cuda" and self.backend == "onnxruntime":
            if "CUDAExecutionProvider" not in detector.providers:
                detector.close()
                raise RunnerUnavailable("ONNX Runtime could not create its CUDA provider on this machine")
        return detector

    def supports_batch(self, size: int) -> tuple[bool, str]:
        if size == 1:
            return True, ""
        if self.backend == "tensorrt":
            return False, "Detector runs TensorRT engines one image per call"
        self._check_open()
        static = self._impl.batch_size  # the model's static batch size; None when dynamic
        if static is None or static == size:
            return True, ""
        return False, f"the model has a static batch size of {static} (export with --dynamic-batch)"

    def info(self) -> dict:
        facts: dict = {}
        if self._impl is not None:
            facts["providers"] = self._impl.providers
            facts["image_size"] = list(self._impl.spec.image_size)
            facts["architecture"] = self._impl.spec.architecture
            facts["classes"] = list(self._impl.spec.classes)
        if self.backend == "onnxruntime":
            facts["ort_intra_op_threads"] = self.spec.threads or "default (one per physical core)"
        return facts


class PeerBenchRunner(BenchRunner):
    """The YOLO11n peer (`facemask_tools.benchmarks.peer`) on ONNX Runtime, at the input size of the
    model it is compared with (`spec.path`, ours, is read for that size only)."""

    def available(self) -> tuple[bool, str]:
        from facemask_tools.benchmarks.peer import peer_available

        return peer_available()

    def _load(self, score_threshold: float):
        from facemask_sdk.backends.onnxrt import OnnxRuntimeRunner
        from facemask_tools.benchmarks.peer import PeerDetector

        size = self.spec.input_size
        if size is None:  # the trained size of our model, read as every ONNX reader of the SDK reads it
            with OnnxRuntimeRunner(self.spec.path, threads=1) as ours:
                size = ours.spec.image_size[0]
        return PeerDetector(size, score_threshold, EVAL_IOU_THRESHOLD, self.spec.threads)

    def supports_batch(self, size: int) -> tuple[bool, str]:
        return (size == 1, "" if size == 1 else "the peer is exported with batch 1")

    def info(self) -> dict:
        facts: dict = {"ort_intra_op_threads": self.spec.threads or "default (one per physical core)"}
        if self._impl is not None:
            facts["image_size"] = [self._impl.size, self._impl.size]
            facts["architecture"] = "yolo11n (Ultralytics)"
            facts["weights"] = self._impl.weights
        return facts


def make_runner(spec: RunnerSpec) -> BenchRunner:
    """The adapter for `spec.backend`."""
    kinds = {
        "pytorch": TorchBenchRunner,
        "onnxruntime": DetectorBenchRunner,
        "tensorrt": DetectorBenchRunner,
        "openvino": DetectorBenchRunner,
        "peer-yolo11n": PeerBenchRunner,
    }
    if spec.backend not in kinds:
        raise FacemaskError(f"unknown backend {spec.backend!r} for runner {spec.name}; expected {', '.join(kinds)}")
    return kinds[spec.backend](spec)


def engine_path(model: Path, precision: str) -> Path:
    """The TensorRT engine of `precision` where `facemask-sdk build-engine` puts it by default:
    `facemask.engine` (FP32), `facemask.fp16.engine`, `facemask.int8.engine`."""
    return variant_path(model, precision, ".engine")


def discover_runners(
    model: Path, checkpoint: Path | None, threads: int | None = None, input_sizes: Sequence[int] = ()
) -> list[BenchRunner]:
    """Every candidate runner, baseline first, in the order of the report (available or not). With
    `input_sizes` (a dynamic-size ONNX) every CPU runner of the ONNX files comes once per size, named
    `<runner>-<size>`; the PyTorch baseline and GPU runners stay at the trained size."""
    model = Path(model)
    build = "make it with `facemask-sdk build-engine --{p} --onnx-only`"
    engine = "build it on the target GPU with `facemask-sdk build-engine --{p}`"
    export = "pass --model, or export one with `facemask-sdk export --checkpoint CKPT --out MODEL`"
    ckpt = str(checkpoint) if checkpoint is not None else ""
    specs = [
        RunnerSpec(
            BASELINE,
            "pytorch",
            "fp32",
            "cpu",
            ckpt,
            threads,
            baseline=True,
            note="effdet DetBenchPredict, eager; NMS runs inside its inference stage",
        ),
        RunnerSpec("ort-cpu-fp32", "onnxruntime", "fp32", "cpu", str(model), threads, note=export),
        RunnerSpec(
            "ort-cpu-fp16",
            "onnxruntime",
            "fp16",
            "cpu",
            str(variant_path(model, "fp16")),
            threads,
            note=build.format(p="fp16"),
        ),
        RunnerSpec(
            "ort-cpu-int8",
            "onnxruntime",
            "int8",
            "cpu",
            str(variant_path(model, "int8")),
            threads,
            note=build.format(p="int8"),
        ),
        RunnerSpec(
            "ov-cpu-auto",
            "openvino",
            "auto",
            "cpu",
            str(model),
            threads,
            note="OpenVINO: bf16 where the CPU has AMX or AVX-512 BF16, else fp32",
        ),
        RunnerSpec(
            "ov-cpu-int8",
            "openvino",
            "int8",
            "cpu",
            str(variant_path(model, "int8")),
            threads,
            note=build.format(p="int8"),
        ),
        RunnerSpec(
            "peer-yolo11n-ort-fp32",
            "peer-yolo11n",
            "fp32",
            "cpu",
            str(model),
            threads,
            note="Ultralytics YOLO11n exported to ONNX at the same size: speed only (another task's classes)",
            speed_only=True,
        ),
        RunnerSpec("pytorch-cuda-fp32", "pytorch", "fp32", "cuda", ckpt, threads),
        RunnerSpec("ort-cuda-fp32", "onnxruntime", "fp32", "cuda", str(model), threads, note=export),
        RunnerSpec(
            "ort-cuda-fp16",
            "onnxruntime",
            "fp16",
            "cuda",
            str(variant_path(model, "fp16")),
            threads,
            note=build.format(p="fp16"),
        ),
    ]
    for precision in ("fp32", "fp16", "int8"):
        specs.append(
            RunnerSpec(
                f"trt-{precision}",
                "tensorrt",
                precision,
                "cuda",
                str(engine_path(model, precision)),
                note=engine.format(p=precision),
            )
        )
    if input_sizes:
        sized = [
            replace(spec, name=f"{spec.name}-{size}", input_size=size)
            for size in input_sizes
            for spec in specs
            if spec.device == "cpu" and not spec.baseline
        ]
        specs = [spec for spec in specs if spec.baseline] + sized + [spec for spec in specs if spec.device != "cpu"]
    return [make_runner(spec) for spec in specs]


def runner_notes(spec: RunnerSpec) -> list[str]:
    """Caveats printed beside a runner's figures."""
    notes = []
    if spec.backend == "pytorch":
        notes.append("effdet's top-k, decoding and NMS run inside its inference stage")
    if spec.backend == "onnxruntime" and spec.precision == "fp16" and spec.device == "cpu":
        notes.append(FP16_CPU_NOTE)
    if spec.speed_only:
        notes.append(
            "speed only: a peer detector of another task, its boxes not scored here; exported from its own "
            "architecture file (random weights where no trained yolo11n.pt is on disk: the same operators and "
            "network time, fewer boxes past the threshold, so its post-processing time is a lower bound)"
        )
    return notes


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver is installed (nvidia-smi on PATH); the runner's open() checks the device itself."""
    return shutil.which("nvidia-smi") is not None
