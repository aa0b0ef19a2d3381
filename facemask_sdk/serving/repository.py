"""Write a Triton Inference Server model repository that serves the detector as one ensemble model.

    facemask                 ensemble: image bytes in, the `protocol` outputs out
    facemask_preprocess      Python backend: decode + letterbox (`facemask_sdk.preprocess`)
    facemask_network         onnxruntime_onnx (CPU) | tensorrt_plan (GPU) | Python backend on ONNX Runtime
    facemask_postprocess     Python backend: decode boxes + NMS (`facemask_sdk.postprocess`), and the close-up
                             check (`facemask_sdk.closeups`): a second network pass by BLS for large faces

The network is the only step worth batching, so it alone has a dynamic batcher; its ONNX must have a
dynamic batch axis (`facemask-sdk export --dynamic-batch`). The configs are data (`model_configs`)
rendered to protobuf text, so tests can parse them with Triton's own `ModelConfig` message.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from facemask_sdk.anchors import generate_anchors
from facemask_sdk.closeups import DEFAULT_CLOSEUP_CHECK
from facemask_sdk.errors import FacemaskError
from facemask_sdk.postprocess import PostprocessConfig
from facemask_sdk.serving.protocol import IMAGE, MAX_DETECTIONS, MODEL_NAME, OUTPUTS
from facemask_sdk.serving.triton_models import (
    CLOSEUP_FILE,
    LETTERBOX,
    NETWORK,
    POSTPROCESS,
    POSTPROCESS_FILE,
    PREPROCESS,
    SPEC_FILE,
)
from facemask_sdk.spec import INPUT_NAME, OUTPUT_NAMES, ModelSpec
from facemask_sdk.validation import true_or_false, whole_number

NETWORK_BACKENDS = ("onnxruntime", "tensorrt", "python")
"""onnxruntime / tensorrt: Triton's own backends (NGC tritonserver images); python: the network on the
SDK's ONNX Runtime runner, for a tritonserver with the Python backend only (PyTriton's)."""

MARKER = ".facemask-triton-repository"
"""Written into every repository: `--force` replaces only a folder that has it (or an empty one)."""

_PYTHON_CLASSES = {PREPROCESS: "PreprocessModel", NETWORK: "NetworkModel", POSTPROCESS: "PostprocessModel"}


class Enum(str):
    """A protobuf enum value: rendered bare (`TYPE_FP32`), not quoted."""


@dataclass(frozen=True)
class RepositoryOptions:
    """What the repository serves and how: batch limits, network instances, NMS settings, and whether the
    post-processing runs the close-up check (`DEFAULT_CLOSEUP_CHECK`, as the `Detector` does by default)."""

    backend: str = "onnxruntime"
    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    max_queue_delay_us: int = 2000
    network_instances: int = 1
    network_threads: int = 0
    host_instances: int = 2
    """Instances of each Python step (decode + letterbox, decode + NMS): each is one Python process."""
    score_threshold: float = PostprocessConfig.score_threshold
    iou_threshold: float = PostprocessConfig.iou_threshold
    closeup_check: bool = True

    def __post_init__(self) -> None:
        if self.backend not in NETWORK_BACKENDS:
            raise FacemaskError(f"backend must be one of {', '.join(NETWORK_BACKENDS)}, got {self.backend!r}")
        for name in ("max_batch_size", "network_instances", "host_instances"):
            whole_number(name, getattr(self, name))
        true_or_false("closeup_check", self.closeup_check)
        if any(not 1 <= size <= self.max_batch_size for size in self.preferred_batch_sizes):
            raise FacemaskError(
                f"preferred batch sizes must lie in [1, {self.max_batch_size}], got {self.preferred_batch_sizes}"
            )
        self.postprocess_config()  # validates the thresholds

    def postprocess_config(self) -> PostprocessConfig:
        return PostprocessConfig(
            score_threshold=self.score_threshold, iou_threshold=self.iou_threshold, max_detections=MAX_DETECTIONS
        )


def _tensor(name: str, triton_type: str, dims: tuple[int, ...]) -> dict:
    return {"name": name, "data_type": Enum(triton_type), "dims": list(dims)}


def model_configs(spec: ModelSpec, options: RepositoryOptions) -> dict[str, dict]:
    """The four models' configs as dicts of `ModelConfig` fields (Triton's model_config.proto)."""
    image_in = _tensor(INPUT_NAME, "TYPE_FP32", (3, *spec.image_size))
    anchors = len(generate_anchors(spec))
    head_out = [
        _tensor(OUTPUT_NAMES[0], "TYPE_FP32", (anchors, spec.num_classes)),
        _tensor(OUTPUT_NAMES[1], "TYPE_FP32", (anchors, 4)),
    ]
    letterbox = _tensor(LETTERBOX, "TYPE_FP32", (5,))
    image = _tensor(IMAGE.name, IMAGE.triton_type, IMAGE.shape)
    post_inputs = [*head_out, letterbox] + ([image] if options.closeup_check else [])  # the check decodes again
    outputs = [_tensor(spec_.name, spec_.triton_type, spec_.shape) for spec_ in OUTPUTS]
    batch = options.max_batch_size
    cpu_instance = [{"kind": Enum("KIND_CPU"), "count": options.host_instances}]

    network = {
        "name": NETWORK,
        "max_batch_size": batch,
        "input": [image_in],
        "output": head_out,
        "dynamic_batching": {
            "preferred_batch_size": list(options.preferred_batch_sizes),
            "max_queue_delay_microseconds": options.max_queue_delay_us,
        },
    }
    if options.backend == "onnxruntime":
        network.update(
            platform="onnxruntime_onnx",
            default_model_filename="model.onnx",
            instance_group=[{"kind": Enum("KIND_CPU"), "count": options.network_instances}],
        )
        if options.network_threads:
            network["parameters"] = [
                {"key": "intra_op_thread_count", "value": {"string_value": str(options.network_threads)}}
            ]
    elif options.backend == "tensorrt":
        network.update(
            platform="tensorrt_plan",
            default_model_filename="model.plan",
            instance_group=[{"kind": Enum("KIND_GPU"), "count": options.network_instances}],
        )
    else:
        network.update(
            backend="python",
            instance_group=[{"kind": Enum("KIND_CPU"), "count": options.network_instances}],
            parameters=[{"key": "threads", "value": {"string_value": str(options.network_threads)}}],
        )

    def step(model: str, inputs: list[str], outputs_: list[str], renamed: dict[str, str]) -> dict:
        return {
            "model_name": model,
            "model_version": -1,
            "input_map": [{"key": name, "value": renamed.get(name, name)} for name in inputs],
            "output_map": [{"key": name, "value": renamed.get(name, name)} for name in outputs_],
        }

    return {
        MODEL_NAME: {
            "name": MODEL_NAME,
            "platform": "ensemble",
            "max_batch_size": batch,
            "input": [image],
            "output": outputs,
            "ensemble_scheduling": {
                "step": [
                    step(PREPROCESS, [IMAGE.name], [INPUT_NAME, LETTERBOX], {}),
                    step(NETWORK, [INPUT_NAME], list(OUTPUT_NAMES), {}),
                    step(POSTPROCESS, [t["name"] for t in post_inputs], [spec_.name for spec_ in OUTPUTS], {}),
                ]
            },
        },
        PREPROCESS: {
            "name": PREPROCESS,
            "backend": "python",
            "max_batch_size": batch,
            "input": [image],
            "output": [image_in, letterbox],
            "instance_group": cpu_instance,
        },
        NETWORK: network,
        POSTPROCESS: {
            "name": POSTPROCESS,
            "backend": "python",
            "max_batch_size": batch,
            "input": post_inputs,
            "output": outputs,
            "instance_group": cpu_instance,
        },
    }


def to_pbtxt(message: dict, indent: int = 0) -> str:
    """Protobuf text format of a dict: nested dicts are messages, lists of dicts repeated messages."""
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", to_pbtxt(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines += [f"{pad}{key} {{", to_pbtxt(item, indent + 1), f"{pad}}}"]
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "\n".join(line for line in lines if line)


def _scalar(value: object) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


@dataclass(frozen=True)
class WrittenRepository:
    path: Path
    spec: ModelSpec
    missing_engine: Path | None
    """For the tensorrt backend without an engine: where `build-engine` must write it."""


def write_repository(
    out: str | Path,
    onnx_path: str | Path,
    options: RepositoryOptions = RepositoryOptions(),
    engine: str | Path | None = None,
    force: bool = False,
) -> WrittenRepository:
    """Write the repository to `out` (refused if it exists, unless `force`: then a repository written
    here before, or an empty folder, is replaced whole once the new one is complete; any other folder is
    never touched). The ONNX must have a dynamic batch axis and float32 I/O."""
    from facemask_sdk.backends.onnxrt import OnnxRuntimeRunner

    out, onnx_path = Path(out).resolve(), Path(onnx_path)
    if out.exists() and not force:
        raise FacemaskError(f"{out} exists; choose another folder or pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise FacemaskError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise FacemaskError(
            f"{out} is not a model repository written by facemask-sdk (no {MARKER}); "
            f"--force replaces only those: choose another folder"
        )
    with OnnxRuntimeRunner(onnx_path) as runner:
        spec, batch, dtype = runner.spec, runner.batch_size, runner.input_dtype
    if batch is not None:
        raise FacemaskError(
            f"{onnx_path} has a fixed batch of {batch}; the server batches requests, so export one with a "
            f"dynamic batch axis: facemask-sdk export --checkpoint models/facemask.pt --dynamic-batch --out ..."
        )
    if dtype is not np.float32:
        raise FacemaskError(f"{onnx_path} takes {dtype} input; the repository needs float32 I/O (FP16 inside is fine)")
    if engine is not None and options.backend != "tensorrt":
        raise FacemaskError("--engine is for the tensorrt backend only")
    if engine is not None and not Path(engine).is_file():
        raise FileNotFoundError(f"engine not found: {engine}")

    configs = model_configs(spec, options)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (staging / MARKER).write_text(f"written by facemask-sdk triton-repository from {onnx_path.name}\n")
        for name, config in configs.items():
            version = staging / name / "1"
            version.mkdir(parents=True)
            (staging / name / "config.pbtxt").write_text(to_pbtxt(config) + "\n")
            if config.get("backend") == "python":
                (version / "model.py").write_text(
                    f"from facemask_sdk.serving.triton_models import {_PYTHON_CLASSES[name]} as TritonPythonModel\n"
                )
                (version / SPEC_FILE).write_text(spec.to_json())
        (staging / POSTPROCESS / "1" / POSTPROCESS_FILE).write_text(json.dumps(asdict(options.postprocess_config())))
        check = asdict(DEFAULT_CLOSEUP_CHECK) if options.closeup_check else None
        (staging / POSTPROCESS / "1" / CLOSEUP_FILE).write_text(json.dumps({"check": check}))
        network_version = staging / NETWORK / "1"
        if options.backend in ("onnxruntime", "python"):
            shutil.copyfile(onnx_path, network_version / "model.onnx")
        elif engine is not None:
            shutil.copyfile(engine, network_version / "model.plan")
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    missing = out / NETWORK / "1" / "model.plan" if options.backend == "tensorrt" and engine is None else None
    return WrittenRepository(out, spec, missing)


def _replace(staging: Path, out: Path) -> None:
    """Move the finished repository into place; an old one is removed only after the move, and put
    back if the move fails."""
    if not out.exists():
        staging.rename(out)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    out.rename(retired / out.name)
    try:
        staging.rename(out)
    except OSError:
        (retired / out.name).rename(out)
        raise
    shutil.rmtree(retired, ignore_errors=True)
