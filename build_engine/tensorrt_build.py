"""Precision ONNX -> serialized TensorRT engine + JSON sidecar, with the TensorRT Python API only.

The steps follow NVIDIA's Python API documentation for TensorRT 10 and 11:

1. `trt.Builder(logger)`; `builder.create_network(flags)`: strongly typed
   (`1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)`) on TensorRT 10, where the flag exists;
   TensorRT 11 networks are always strongly typed (the flag is deprecated and ignored, so none is
   passed). Precision then comes from the graph: FP16 tensors, Q/DQ for INT8. Only a TensorRT
   without strong typing falls back to a weakly typed network with `BuilderFlag.FP16` / `INT8`.
2. `trt.OnnxParser(network, logger).parse_from_file(path)`; on failure every
   `parser.get_error(i)` is reported with its `node_name()`, `node_operator()` and `desc()`.
3. `builder.create_builder_config()`; `config.set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)`;
   an optimisation profile (`builder.create_optimization_profile()`, `profile.set_shape(input,
   MIN, OPT, MAX)`, `config.add_optimization_profile`) for a dynamic batch axis.
4. Timing cache: `config.create_timing_cache(previous bytes or b"")`,
   `config.set_timing_cache(cache, ignore_mismatch=False)`; after the build
   `config.get_timing_cache().serialize()` is written back, so rebuilds skip tactic timing.
5. `builder.build_serialized_network(network, config)`; the engine is written atomically, then its
   JSON sidecar `<engine>.json` (`facemask_sdk.engine_meta`: model spec and metadata, precision,
   TensorRT version, GPU name and compute capability, ONNX sha256, build options): engines are not
   portable across GPUs or TensorRT versions, and the runtime refuses an engine whose sidecar does
   not match the machine.

`import tensorrt` happens only when an engine is built; everything else here is plain Python.

    >>> build_engine(Path("models/facemask.fp16.onnx"), Path("models/facemask.fp16.engine"), BuildOptions("fp16"))
"""

from __future__ import annotations

import datetime as _dt
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import facemask_sdk
from build_engine.precision import PRECISION_KEY, PRECISIONS
from facemask_sdk.files import file_sha256, write_atomically
from facemask_sdk.engine_meta import SIDECAR_FORMAT, sidecar_path, write_sidecar
from facemask_sdk.errors import FacemaskError
from facemask_sdk.spec import METADATA_KEY, ModelSpec

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


class TensorRTUnavailable(FacemaskError):
    """TensorRT or an NVIDIA GPU is missing here: the engine has to be built on the target device.

    `reason` is the bare fact ("TensorRT is not installed here"); the message adds the command."""

    def __init__(self, reason: str, command: str = "") -> None:
        self.reason = reason
        self.command = command
        hint = f" with: {command}" if command else ""
        super().__init__(f"{reason}; build the engine on the target device (e.g. the Jetson){hint}")


class EngineBuildError(FacemaskError):
    """TensorRT refused the model (parser errors with node names) or could not build an engine."""


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes an engine accepts: `min <= opt <= max` (all equal for a static batch)."""

    min: int = 1
    opt: int = 1
    max: int = 1

    def __post_init__(self) -> None:
        values = (self.min, self.opt, self.max)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values) or not 1 <= self.min <= self.opt <= self.max:
            raise FacemaskError(f"batch sizes must be integers with 1 <= MIN <= OPT <= MAX, got {values}")

    @classmethod
    def static(cls, batch: int) -> "BatchProfile":
        return cls(batch, batch, batch)

    @classmethod
    def parse(cls, text: str) -> "BatchProfile":
        """`"1,4,8"` -> BatchProfile(1, 4, 8) (the `--dynamic-batch MIN,OPT,MAX` option)."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise FacemaskError(f"--dynamic-batch takes MIN,OPT,MAX (three positive integers, e.g. 1,4,8), got {text!r}")
        return cls(*(int(p) for p in parts))

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    def __str__(self) -> str:
        return str(self.min) if self.is_static else f"{self.min},{self.opt},{self.max}"


@dataclass(frozen=True)
class BuildOptions:
    """How to build: the ONNX graph's precision, batch sizes, workspace and timing cache file."""

    precision: str = "fp16"
    batch: BatchProfile = field(default_factory=BatchProfile)
    workspace_gb: float = 2.0
    timing_cache: Path | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise FacemaskError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if not self.workspace_gb > 0:
            raise FacemaskError(f"--workspace-gb must be positive, got {self.workspace_gb}")

    @property
    def workspace_bytes(self) -> int:
        return int(self.workspace_gb * (1 << 30))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["batch"] = {"min": self.batch.min, "opt": self.batch.opt, "max": self.batch.max}
        data["timing_cache"] = str(self.timing_cache) if self.timing_cache else None
        return data


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str
    source: str


@dataclass(frozen=True)
class EngineReport:
    path: Path
    sidecar: Path
    size_bytes: int
    tensorrt_version: str
    gpu: GpuInfo
    strongly_typed: bool
    seconds: float

    def lines(self) -> list[str]:
        typing = "strongly typed" if self.strongly_typed else "weakly typed (precision flags)"
        return [
            f"wrote {self.path} ({self.size_bytes / 1e6:.1f} MB) in {self.seconds:.1f} s: TensorRT {self.tensorrt_version}, "
            f"{typing}, {self.gpu.name} (compute {self.gpu.compute_capability})",
            f"wrote {self.sidecar}",
        ]


# -- pure-Python parts (tested without TensorRT) ---------------------------------------------------


def tensorrt_version() -> str | None:
    """The installed TensorRT's version, or None (reads package metadata; does not import it)."""
    from importlib import metadata as importlib_metadata
    from importlib.util import find_spec

    if find_spec("tensorrt") is None:
        return None
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_libs"):
        try:
            return importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
    return "unknown"


def device_command(onnx_path: Path, options: BuildOptions, engine_path: Path | None = None) -> str:
    """The `facemask-sdk build-engine` command that builds this engine from a precision ONNX."""
    parts = ["facemask-sdk", "build-engine", "--onnx", _shown(onnx_path), f"--{options.precision}"]
    parts += ["--batch", str(options.batch.min)] if options.batch.is_static else ["--dynamic-batch", str(options.batch)]
    if options.workspace_gb != BuildOptions.workspace_gb:
        parts += ["--workspace-gb", f"{options.workspace_gb:g}"]
    if engine_path is not None:
        parts += ["--out", _shown(engine_path)]
    return " ".join(parts)


def _shown(path: Path) -> str:
    """A path as a command line should show it: relative to the current folder when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) if path.is_absolute() else str(path)
    except ValueError:
        return str(path)


def make_sidecar(
    onnx_path: Path,
    model_metadata: dict[str, str],
    options: BuildOptions,
    trt_version: str,
    gpu: GpuInfo,
    strongly_typed: bool,
    engine_sha256: str | None = None,
) -> dict:
    """The JSON written beside an engine (`facemask_sdk.engine_meta`'s format, which the runtime
    checks): what it was built from, with which TensorRT, for which GPU, with which options."""
    if METADATA_KEY not in model_metadata:
        raise FacemaskError(f"{onnx_path} has no facemask-sdk metadata ('{METADATA_KEY}'); export it with `facemask-sdk export`")
    return {
        "spec": ModelSpec.from_json(model_metadata[METADATA_KEY]).to_dict(),
        "precision": options.precision,
        "tensorrt_version": trt_version,
        "gpu_name": gpu.name,
        "compute_capability": gpu.compute_capability,
        "onnx_sha256": file_sha256(onnx_path),
        "onnx_path": str(onnx_path),
        "format_version": SIDECAR_FORMAT,
        "model_metadata": dict(model_metadata),
        "gpu_source": gpu.source,
        "engine_sha256": engine_sha256,
        "build_options": {**options.to_dict(), "strongly_typed": strongly_typed, "onnx": str(onnx_path)},
        "built_with": f"facemask-sdk {facemask_sdk.__version__}",
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def format_parser_error(error) -> str:
    """One line per `IParserError`: node name and operator (TensorRT 10+), description."""
    node_name = _call(error, "node_name")
    operator = _call(error, "node_operator")
    where = f"node {node_name!r}" if node_name else f"node #{_call(error, 'node')}"
    if operator:
        where += f" ({operator})"
    return f"{where}: {_call(error, 'desc')}"


def onnx_batch_dim(onnx_path: Path) -> tuple[str, int | None, list]:
    """(input name, static batch size or None when the batch axis is dynamic, full shape)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise FacemaskError(f"{onnx_path}: expected one input (images), found {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    batch = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None
    return inputs[0].name, batch, shape


def check_batch(onnx_path: Path, batch: BatchProfile) -> None:
    """The requested batch sizes must fit the ONNX input: a static graph only builds its own batch."""
    _, static, _ = onnx_batch_dim(onnx_path)
    if static is not None and (batch.min, batch.max) != (static, static):
        raise FacemaskError(
            f"{onnx_path} has a static batch of {static}, so the engine can only take batch {static}; "
            f"re-export with `facemask-sdk export --dynamic-batch` for batch {batch}"
        )


def gpu_info(command: str = "") -> GpuInfo:
    """Name and compute capability of GPU 0 from pycuda (what the runtime checks against), cuda-python
    or nvidia-smi, whichever answers first."""
    for probe in (_gpu_from_pycuda, _gpu_from_cuda_python, _gpu_from_nvidia_smi):
        info = probe()
        if info is not None:
            return info
    raise TensorRTUnavailable("no NVIDIA GPU is visible here (checked cuda-python, pycuda and nvidia-smi)", command)


def _gpu_from_cuda_python() -> GpuInfo | None:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            return None
    error, prop = cudart.cudaGetDeviceProperties(0)
    if error != cudart.cudaError_t.cudaSuccess or prop is None:
        return None
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return GpuInfo(name.rstrip("\x00").strip(), f"{prop.major}.{prop.minor}", "cuda-python")


def _gpu_from_pycuda() -> GpuInfo | None:
    try:
        import pycuda.driver as cuda
    except ImportError:
        return None
    try:
        cuda.init()
        device = cuda.Device(0)
        major, minor = device.compute_capability()
        return GpuInfo(device.name(), f"{major}.{minor}", "pycuda")
    except cuda.Error:
        return None


def _gpu_from_nvidia_smi() -> GpuInfo | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_nvidia_smi(out.stdout) if out.returncode == 0 else None


def parse_nvidia_smi(text: str) -> GpuInfo | None:
    """First line of `nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader`."""
    line = next((l for l in text.splitlines() if l.strip()), "")
    if "," not in line:
        return None
    name, capability = (part.strip() for part in line.rsplit(",", 1))
    return GpuInfo(name, capability, "nvidia-smi") if name else None


def _call(obj, method: str):
    function = getattr(obj, method, None)
    return function() if callable(function) else None


# -- the build (needs TensorRT and a GPU) ----------------------------------------------------------


def import_tensorrt(command: str = ""):
    """`import tensorrt`, or `TensorRTUnavailable` saying where and how to build instead."""
    try:
        import tensorrt
    except ImportError:
        raise TensorRTUnavailable("TensorRT is not installed here", command) from None
    return tensorrt


def create_network(trt, builder) -> tuple[object, bool]:
    """(network, strongly_typed): strongly typed where the TensorRT version allows it (see module docs)."""
    major = int(str(trt.__version__).split(".")[0])
    flags = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if major >= 11:
        return builder.create_network(0), True  # always strongly typed; the flag is deprecated there
    if flags is not None and hasattr(flags, "STRONGLY_TYPED"):
        return builder.create_network(1 << int(flags.STRONGLY_TYPED)), True
    return builder.create_network(0), False


def build_engine(onnx_path: Path, engine_path: Path, options: BuildOptions, overwrite: bool = False) -> EngineReport:
    """Build `engine_path` (and its sidecar) from the precision ONNX `onnx_path`; see the module docs."""
    import time

    import onnx

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    if engine_path.suffix.lower() not in ENGINE_SUFFIXES:
        raise FacemaskError(f"the engine file must end in {', '.join(ENGINE_SUFFIXES)}, got {engine_path}")
    if engine_path.exists() and not overwrite:
        raise FacemaskError(f"{engine_path} already exists; pass --force (overwrite=True) to replace it")
    input_name, _, shape = onnx_batch_dim(onnx_path)
    check_batch(onnx_path, options.batch)
    model_metadata = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    recorded = model_metadata.get(PRECISION_KEY, "fp32")
    if recorded != options.precision:
        raise FacemaskError(f"{onnx_path} is a {recorded} model but a {options.precision} engine was asked for")
    command = device_command(onnx_path, options, engine_path)
    trt = import_tensorrt(command)
    gpu = gpu_info(command)
    started = time.perf_counter()

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, strongly_typed = create_network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [format_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: " + "; ".join(errors or ["no details"]))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    if not strongly_typed:  # TensorRT 10 without strong typing: let it pick the precision by flags
        if options.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if options.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
    if not isinstance(shape[0], int) or shape[0] <= 0:
        profile = builder.create_optimization_profile()
        rest = tuple(int(d) for d in shape[1:])
        batch = options.batch
        profile.set_shape(input_name, (batch.min, *rest), (batch.opt, *rest), (batch.max, *rest))
        config.add_optimization_profile(profile)
    cache_file = options.timing_cache or engine_path.with_name(f"timing-tensorrt-{trt.__version__}.cache")
    previous = cache_file.read_bytes() if cache_file.is_file() else b""
    timing_cache = config.create_timing_cache(previous)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} could not build an engine from {onnx_path}; see its log above")
    engine_bytes = bytes(memoryview(serialized))
    write_atomically(cache_file, bytes(memoryview(config.get_timing_cache().serialize())), overwrite=True)
    write_atomically(engine_path, engine_bytes, overwrite)
    sidecar = make_sidecar(
        onnx_path, model_metadata, options, str(trt.__version__), gpu, strongly_typed, _sha256_bytes(engine_bytes)
    )
    side_path = write_sidecar(engine_path, sidecar)
    return EngineReport(
        engine_path, side_path, len(engine_bytes), str(trt.__version__), gpu, strongly_typed, time.perf_counter() - started
    )


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


__all__ = [
    "BatchProfile",
    "BuildOptions",
    "EngineBuildError",
    "EngineReport",
    "GpuInfo",
    "TensorRTUnavailable",
    "build_engine",
    "device_command",
    "format_parser_error",
    "gpu_info",
    "make_sidecar",
    "sidecar_path",
    "tensorrt_version",
]
