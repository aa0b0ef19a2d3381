"""Precision ONNX -> serialized TensorRT engine + JSON sidecar, with the TensorRT Python API only.

The steps follow NVIDIA's Python API documentation for TensorRT 10 and 11:

0. TensorRT older than 10 (JetPack 6.0's 8.6 makes implicit-batch networks from `create_network(0)`)
   is refused in one line, by the check the runtime uses (`check_tensorrt_version`).
1. `trt.Builder(logger)`; `builder.create_network(flags)`: strongly typed
   (`1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)`) on TensorRT 10; TensorRT 11 networks
   are always strongly typed (the flag is deprecated and ignored, so none is passed). Precision comes
   from the graph: FP16 tensors, Q/DQ for INT8; no precision flags are set.
2. `trt.OnnxParser(network, logger).parse_from_file(path)`; on failure every
   `parser.get_error(i)` is reported with its `node_name()`, `node_operator()` and `desc()`.
3. `builder.create_builder_config()`; `config.set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)`
   (default: half the free GPU memory, at most 2 GiB: an Orin Nano shares 4 GB with the CPU);
   an optimisation profile (`builder.create_optimization_profile()`, `profile.set_shape(input,
   MIN, OPT, MAX)`, `config.add_optimization_profile`) for a dynamic batch axis.
4. Timing cache, one file per GPU and TensorRT version (`timing_cache_path`):
   `config.create_timing_cache(previous bytes or b"")`, `config.set_timing_cache(cache,
   ignore_mismatch=False)`; a cache it refuses (returns False) is replaced by an empty one and said so.
   Only after the engine is written is `config.get_timing_cache().serialize()` saved, so rebuilds skip
   tactic timing and a failed build loses nothing.
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
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import facemask_sdk
from facemask_sdk.backends.tensorrt import TensorRTNotInstalled
from facemask_sdk.backends.tensorrt import import_tensorrt as runtime_import_tensorrt
from facemask_sdk.engine_meta import SIDECAR_FORMAT, build_command, sidecar_path, write_sidecar
from facemask_sdk.errors import FacemaskError
from facemask_sdk.files import file_sha256, write_atomically
from facemask_sdk.spec import spec_from_metadata
from facemask_tools.build_engine.gpu_probe import GpuInfo, free_gpu_memory, visible_gpu
from facemask_tools.build_engine.precision import PRECISION_KEY, PRECISIONS

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
        if (
            any(isinstance(v, bool) or not isinstance(v, int) for v in values)
            or not 1 <= self.min <= self.opt <= self.max
        ):
            raise FacemaskError(f"batch sizes must be integers with 1 <= MIN <= OPT <= MAX, got {values}")

    @classmethod
    def static(cls, batch: int) -> BatchProfile:
        return cls(batch, batch, batch)

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """`"1,4,8"` -> BatchProfile(1, 4, 8) (the `--dynamic-batch MIN,OPT,MAX` option)."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise FacemaskError(
                f"--dynamic-batch takes MIN,OPT,MAX (three positive integers, e.g. 1,4,8), got {text!r}"
            )
        return cls(*(int(p) for p in parts))

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    def __str__(self) -> str:
        return str(self.min) if self.is_static else f"{self.min},{self.opt},{self.max}"


@dataclass(frozen=True)
class BuildOptions:
    """How to build: the ONNX graph's precision, batch sizes, workspace (None: sized from the free GPU
    memory when building) and timing cache file (None: one per GPU and TensorRT beside the engine)."""

    precision: str = "fp16"
    batch: BatchProfile = field(default_factory=BatchProfile)
    workspace_gb: float | None = None
    timing_cache: Path | None = None
    input_size: int | None = None
    """The side the engine reads, from a `--dynamic-size` ONNX (None: the size it was trained at)."""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise FacemaskError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        size = self.input_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % 128):
            raise FacemaskError(f"--input-size must be a positive multiple of 128, got {size!r}")
        if self.workspace_gb is not None and not self.workspace_gb > 0:
            raise FacemaskError(f"--workspace-gb must be positive, got {self.workspace_gb}")

    def workspace_bytes(self, free_bytes: int | None = None) -> int:
        """The workspace limit: the given `workspace_gb`, else `default_workspace_bytes(free_bytes)`."""
        if self.workspace_gb is not None:
            return int(self.workspace_gb * (1 << 30))
        return default_workspace_bytes(free_bytes)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["batch"] = {"min": self.batch.min, "opt": self.batch.opt, "max": self.batch.max}
        data["timing_cache"] = str(self.timing_cache) if self.timing_cache else None
        return data


MAX_DEFAULT_WORKSPACE = 2 << 30
MIN_DEFAULT_WORKSPACE = 256 << 20


def default_workspace_bytes(free_bytes: int | None) -> int:
    """Half the free GPU memory, between 256 MiB and 2 GiB (2 GiB when it cannot be read). TensorRT uses
    the workspace for tactic scratch space; on a Jetson it comes out of the memory the CPU shares."""
    if free_bytes is None or free_bytes <= 0:
        return MAX_DEFAULT_WORKSPACE
    return int(min(MAX_DEFAULT_WORKSPACE, max(MIN_DEFAULT_WORKSPACE, free_bytes // 2)))


def timing_cache_path(engine_path: Path, trt_version: str, gpu: GpuInfo) -> Path:
    """`<engine folder>/timing-<gpu>-sm<cc>-trt<version>.timing.cache`: tactic timings belong to one GPU
    and one TensorRT, so each pair gets its own file (and `*.timing.cache` is git-ignored)."""
    gpu_slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu.name).strip("-").lower() or "gpu"
    capability = gpu.compute_capability.replace(".", "")
    return Path(engine_path).with_name(f"timing-{gpu_slug}-sm{capability}-trt{trt_version}.timing.cache")


@dataclass(frozen=True)
class EngineReport:
    path: Path
    sidecar: Path
    size_bytes: int
    tensorrt_version: str
    gpu: GpuInfo
    strongly_typed: bool
    seconds: float
    workspace_bytes: int = 0
    timing_cache: Path | None = None
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        lines = [
            f"wrote {self.path} ({self.size_bytes / 1e6:.1f} MB) in {self.seconds:.1f} s: TensorRT {self.tensorrt_version}, "
            f"strongly typed, {self.gpu.name} (compute {self.gpu.compute_capability}), "
            f"workspace {self.workspace_bytes / (1 << 20):.0f} MiB",
            f"wrote {self.sidecar}",
        ]
        if self.timing_cache is not None:
            lines.append(f"wrote {self.timing_cache} (tactic timings for rebuilds on this GPU)")
        return [*self.notes, *lines]


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
    batch = options.batch
    return build_command(
        _shown(onnx_path),
        options.precision,
        (batch.min, batch.opt, batch.max),
        options.workspace_gb,
        None if engine_path is None else _shown(engine_path),
        options.input_size,
    )


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
    spec = spec_from_metadata(model_metadata, onnx_path)
    if options.input_size is not None:
        spec = spec.at_input_size(options.input_size)  # what the runtime checks the engine against
    return {
        "spec": spec.to_dict(),
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


def check_input_size(onnx_path: Path, shape: list, model_metadata: dict[str, str], asked: int | None) -> int:
    """The engine's input side: `asked` from a dynamic-size graph, else the graph's own (trained) size."""
    dynamic = len(shape) == 4 and not all(isinstance(d, int) and d > 0 for d in shape[2:])
    return spec_from_metadata(model_metadata, onnx_path).read_at(asked, dynamic, onnx_path).image_size[0]


def gpu_info(command: str = "") -> GpuInfo:
    """GPU 0 as `visible_gpu` finds it, else `TensorRTUnavailable` naming what was checked."""
    info = visible_gpu()
    if info is None:
        raise TensorRTUnavailable("no NVIDIA GPU is visible here (checked cuda-python, pycuda and nvidia-smi)", command)
    return info


def _call(obj, method: str):
    function = getattr(obj, method, None)
    return function() if callable(function) else None


# -- the build (needs TensorRT and a GPU) ----------------------------------------------------------


def import_tensorrt(command: str = ""):
    """`import tensorrt`, or `TensorRTUnavailable` saying where and how to build instead."""
    try:
        return runtime_import_tensorrt()
    except TensorRTNotInstalled:
        raise TensorRTUnavailable("TensorRT is not installed here", command) from None


def create_network(trt, builder):
    """A strongly typed network (see module docs); `import_tensorrt` has refused TensorRT < 10."""
    major = int(str(trt.__version__).split(".")[0])
    if major >= 11:
        return builder.create_network(0)  # always strongly typed; the flag is deprecated there
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))


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
    size = check_input_size(onnx_path, shape, model_metadata, options.input_size)
    command = device_command(onnx_path, options, engine_path)
    trt = import_tensorrt(command)
    gpu = gpu_info(command)
    started = time.perf_counter()

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = create_network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [format_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(
            f"TensorRT {trt.__version__} cannot parse {onnx_path}: " + "; ".join(errors or ["no details"])
        )

    config = builder.create_builder_config()
    workspace = options.workspace_bytes(None if options.workspace_gb is not None else free_gpu_memory())
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    if any(not isinstance(d, int) or d <= 0 for d in shape):  # dynamic batch, or height and width
        profile = builder.create_optimization_profile()
        rest = (3, size, size)
        batch = options.batch
        profile.set_shape(input_name, (batch.min, *rest), (batch.opt, *rest), (batch.max, *rest))
        config.add_optimization_profile(profile)
    cache_file = (
        Path(options.timing_cache)
        if options.timing_cache
        else timing_cache_path(engine_path, str(trt.__version__), gpu)
    )
    notes: list[str] = []
    previous = cache_file.read_bytes() if cache_file.is_file() else b""
    try:
        timing_cache = config.create_timing_cache(previous)
    except Exception:  # noqa: BLE001 - a truncated or corrupt cache file: TensorRT raises or returns None
        timing_cache = None
    if timing_cache is None or not config.set_timing_cache(timing_cache, ignore_mismatch=False):
        if not previous:
            raise EngineBuildError(f"TensorRT {trt.__version__} refused an empty timing cache")
        notes.append(f"{cache_file} was made by another TensorRT or GPU; building without it (it will be replaced)")
        timing_cache = config.create_timing_cache(b"")
        if not config.set_timing_cache(timing_cache, ignore_mismatch=False):
            raise EngineBuildError(f"TensorRT {trt.__version__} refused an empty timing cache")

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} could not build an engine from {onnx_path}; see its log above"
        )
    engine_bytes = bytes(memoryview(serialized))
    write_atomically(engine_path, engine_bytes, overwrite)
    options_used = replace(options, workspace_gb=workspace / (1 << 30), timing_cache=cache_file)
    sidecar = make_sidecar(
        onnx_path, model_metadata, options_used, str(trt.__version__), gpu, True, _sha256_bytes(engine_bytes)
    )
    side_path = write_sidecar(engine_path, sidecar)
    # the cache last: a build that fails before this point leaves the previous cache as it was
    write_atomically(cache_file, bytes(memoryview(config.get_timing_cache().serialize())), overwrite=True)
    return EngineReport(
        engine_path,
        side_path,
        len(engine_bytes),
        str(trt.__version__),
        gpu,
        True,
        time.perf_counter() - started,
        workspace,
        cache_file,
        tuple(notes),
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
    "default_workspace_bytes",
    "device_command",
    "format_parser_error",
    "gpu_info",
    "make_sidecar",
    "sidecar_path",
    "tensorrt_version",
    "timing_cache_path",
]
