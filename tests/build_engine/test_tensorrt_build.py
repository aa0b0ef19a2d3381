"""TensorRT engine building: the real build where TensorRT and a GPU exist (skipped elsewhere), and the
plain-Python parts everywhere: batch profiles, sidecar content, error messages, and the sequence of
TensorRT API calls, checked against a stand-in `tensorrt` module that records them."""

from __future__ import annotations

import enum
import hashlib
import sys
import types
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")

from facemask_sdk.engine_meta import check_compatible, read_sidecar  # noqa: E402
from facemask_sdk.errors import FacemaskError  # noqa: E402
from facemask_sdk.spec import METADATA_KEY, ModelSpec  # noqa: E402
from facemask_tools.build_engine import tensorrt_build as tb  # noqa: E402
from facemask_tools.build_engine.precision import PRECISION_KEY  # noqa: E402

TRT_MISSING = tb.tensorrt_version() is None
GPU = tb.GpuInfo("Orin (test)", "8.7", "test")


# -- stand-in TensorRT ------------------------------------------------------------------------------


def fake_tensorrt(
    version: str = "10.3.0", strongly_typed_flag: bool = True, parse_ok: bool = True, build_ok: bool = True
):
    """A `tensorrt` module with the API surface `build_engine` uses; `calls` records what was called."""
    calls: list[tuple] = []
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = calls

    class Logger:
        WARNING = "warning"

        def __init__(self, severity):
            calls.append(("Logger", severity))

    members = (
        {"STRONGLY_TYPED": 0, "PREFER_AOT_PYTHON_PLUGINS": 1}
        if strongly_typed_flag
        else {"PREFER_AOT_PYTHON_PLUGINS": 1}
    )
    trt.Logger = Logger
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", members)
    trt.BuilderFlag = enum.Enum("BuilderFlag", ["FP16", "INT8"])
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE"])

    class TimingCache:
        def __init__(self, data: bytes):
            self.data = bytes(data)

        def serialize(self):
            return memoryview(self.data + b"+timings")

    class Profile:
        def set_shape(self, name, minimum, opt, maximum):
            calls.append(("set_shape", name, minimum, opt, maximum))

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", pool.name, size))

        def set_flag(self, flag):
            calls.append(("set_flag", flag.name))

        def add_optimization_profile(self, profile):
            calls.append(("add_optimization_profile",))

        def create_timing_cache(self, data):
            calls.append(("create_timing_cache", bytes(data)))
            self.cache = TimingCache(data)
            return self.cache

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", ignore_mismatch))
            return not cache.data.startswith(b"FOREIGN")  # a cache of another GPU/TensorRT is refused

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            calls.append(("Builder",))

        def create_network(self, flags=0):
            calls.append(("create_network", flags))
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network",))
            return memoryview(b"ENGINE-BYTES") if build_ok else None

    class ParserError:
        def __init__(self, index):
            self.index = index

        def node_name(self):
            return f"/network/bad_{self.index}"

        def node_operator(self):
            return "FancyOp"

        def desc(self):
            return "no importer registered"

        def node(self):
            return self.index

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = 0 if parse_ok else 2

        def parse_from_file(self, path):
            calls.append(("parse_from_file", path))
            return parse_ok

        def get_error(self, index):
            return ParserError(index)

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


@pytest.fixture()
def with_trt(monkeypatch):
    """`with_trt(**fake_tensorrt_kwargs)` installs a stand-in TensorRT and a stand-in GPU."""

    def install(**kwargs):
        trt = fake_tensorrt(**kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(tb, "gpu_info", lambda command="": GPU)
        return trt

    return install


def with_precision(onnx_path: Path, out: Path, precision: str, dynamic: bool = False) -> Path:
    """A copy of the model that says it is `precision` (the builder trusts the file's metadata)."""
    model = onnx.load(str(onnx_path))
    entry = model.metadata_props.add()
    entry.key, entry.value = PRECISION_KEY, precision
    if dynamic:
        dim = model.graph.input[0].type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "batch"
    onnx.save(model, str(out))
    return out


# -- the real thing ---------------------------------------------------------------------------------


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.skipif(TRT_MISSING, reason="TensorRT is not installed")
def test_build_real_fp16_engine(tiny_onnx: Path, tmp_path: Path):
    from facemask_tools.build_engine.fp16 import to_fp16

    fp16 = to_fp16(tiny_onnx, tmp_path / "tiny.fp16.onnx").path
    report = tb.build_engine(fp16, tmp_path / "tiny.fp16.engine", tb.BuildOptions("fp16"))
    assert report.path.stat().st_size > 1000
    sidecar = read_sidecar(report.path)
    assert sidecar["precision"] == "fp16" and sidecar["tensorrt_version"] == report.tensorrt_version


@pytest.mark.skipif(not TRT_MISSING, reason="TensorRT is installed here")
def test_without_tensorrt_the_error_names_the_device_command(tiny_onnx: Path, tmp_path: Path):
    onnx_path = with_precision(tiny_onnx, tmp_path / "m.fp16.onnx", "fp16")
    with pytest.raises(tb.TensorRTUnavailable) as info:
        tb.build_engine(onnx_path, tmp_path / "m.fp16.engine", tb.BuildOptions("fp16"))
    message = str(info.value)
    assert "\n" not in message and "TensorRT is not installed" in message
    assert (
        f"facemask-sdk build-engine --onnx {onnx_path} --fp16 --batch 1 --out {tmp_path / 'm.fp16.engine'}" in message
    )
    assert not (tmp_path / "m.fp16.engine").exists()


# -- the build sequence against the stand-in ---------------------------------------------------------


def test_build_sequence_tensorrt_10(with_trt, tiny_onnx: Path, tmp_path: Path):
    trt = with_trt(version="10.3.0")
    onnx_path = with_precision(tiny_onnx, tmp_path / "m.int8.onnx", "int8")
    engine = tmp_path / "m.int8.engine"
    report = tb.build_engine(onnx_path, engine, tb.BuildOptions("int8", workspace_gb=1.5))

    names = [c[0] for c in trt.calls]
    assert ("create_network", 1 << 0) in trt.calls  # strongly typed
    assert names.index("parse_from_file") < names.index("build_serialized_network")
    assert ("set_memory_pool_limit", "WORKSPACE", int(1.5 * (1 << 30))) in trt.calls
    assert not any(c[0] == "set_flag" for c in trt.calls)  # precision comes from the graph
    assert not any(c[0] == "set_shape" for c in trt.calls)  # static batch: no profile needed
    assert ("create_timing_cache", b"") in trt.calls and ("set_timing_cache", False) in trt.calls
    assert engine.read_bytes() == b"ENGINE-BYTES"
    cache = tb.timing_cache_path(engine, "10.3.0", GPU)
    assert cache.name == "timing-orin-test-sm87-trt10.3.0.timing.cache"
    assert cache.read_bytes() == b"+timings" and report.timing_cache == cache
    assert report.strongly_typed and report.sidecar == tb.sidecar_path(engine)

    sidecar = read_sidecar(engine)  # the runtime's reader validates it
    metadata = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert ModelSpec.from_dict(sidecar["spec"]) == ModelSpec.from_json(metadata[METADATA_KEY])
    assert sidecar["model_metadata"] == metadata
    assert sidecar["precision"] == "int8" and sidecar["tensorrt_version"] == "10.3.0"
    assert (sidecar["gpu_name"], sidecar["compute_capability"]) == (GPU.name, "8.7")
    assert sidecar["onnx_sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert sidecar["onnx_path"] == str(onnx_path)
    check_compatible(sidecar, "10.3.0", GPU.name, "8.7")
    with pytest.raises(FacemaskError, match=f"build-engine --onnx {onnx_path} --int8"):
        check_compatible(sidecar, "10.4.0", GPU.name, "8.7")
    assert sidecar["engine_sha256"] == hashlib.sha256(b"ENGINE-BYTES").hexdigest()
    assert sidecar["build_options"]["batch"] == {"min": 1, "opt": 1, "max": 1}
    assert sidecar["build_options"]["workspace_gb"] == 1.5 and sidecar["build_options"]["strongly_typed"]

    # a rebuild loads the saved timing cache and refuses to overwrite without overwrite=True
    with pytest.raises(FacemaskError, match="already exists"):
        tb.build_engine(onnx_path, engine, tb.BuildOptions("int8"))
    tb.build_engine(onnx_path, engine, tb.BuildOptions("int8"), overwrite=True)
    assert ("create_timing_cache", b"+timings") in trt.calls


def test_tensorrt_11_is_always_strongly_typed(with_trt, tiny_onnx: Path, tmp_path: Path):
    trt = with_trt(version="11.0.0")
    onnx_path = with_precision(tiny_onnx, tmp_path / "m.fp16.onnx", "fp16")
    report = tb.build_engine(onnx_path, tmp_path / "m.engine", tb.BuildOptions("fp16"))
    assert ("create_network", 0) in trt.calls and report.strongly_typed
    assert not any(c[0] == "set_flag" for c in trt.calls)


def test_tensorrt_older_than_10_is_refused_before_building(with_trt, tiny_onnx: Path, tmp_path: Path):
    """JetPack 6.0 ships TensorRT 8.6, whose `create_network(0)` is an implicit-batch network."""
    trt = with_trt(version="8.6.2")
    onnx_path = with_precision(tiny_onnx, tmp_path / "m.fp16.onnx", "fp16")
    with pytest.raises(
        FacemaskError, match=r"TensorRT 8\.6\.2 is installed here, but facemask-sdk needs TensorRT 10 or 11"
    ):
        tb.build_engine(onnx_path, tmp_path / "m.engine", tb.BuildOptions("fp16"))
    assert not any(c[0] == "create_network" for c in trt.calls)
    assert not (tmp_path / "m.engine").exists()


def test_the_timing_cache_is_per_gpu_and_tensorrt() -> None:
    engine = Path("out/m.engine")
    names = {
        tb.timing_cache_path(engine, version, gpu).name
        for version, gpu in [
            ("10.3.0", GPU),
            ("10.4.0", GPU),
            ("10.3.0", tb.GpuInfo("NVIDIA H200", "9.0", "test")),
            ("10.3.0", tb.GpuInfo("Orin (test)", "8.6", "test")),
        ]
    }
    assert len(names) == 4 and all(name.endswith(".timing.cache") for name in names)


def test_a_refused_timing_cache_is_replaced_not_trusted(with_trt, tiny_onnx: Path, tmp_path: Path):
    trt = with_trt()
    onnx_path = with_precision(tiny_onnx, tmp_path / "m.fp16.onnx", "fp16")
    engine = tmp_path / "m.engine"
    cache = tb.timing_cache_path(engine, "10.3.0", GPU)
    cache.write_bytes(b"FOREIGN-CACHE")
    report = tb.build_engine(onnx_path, engine, tb.BuildOptions("fp16"))
    assert [c for c in trt.calls if c[0] == "create_timing_cache"] == [
        ("create_timing_cache", b"FOREIGN-CACHE"),
        ("create_timing_cache", b""),
    ]
    assert any("made by another TensorRT or GPU" in line for line in report.lines())
    assert cache.read_bytes() == b"+timings"


def test_a_failed_build_keeps_the_previous_timing_cache(with_trt, tiny_onnx: Path, tmp_path: Path):
    with_trt(build_ok=False)
    onnx_path = with_precision(tiny_onnx, tmp_path / "m.fp16.onnx", "fp16")
    engine = tmp_path / "m.engine"
    cache = tb.timing_cache_path(engine, "10.3.0", GPU)
    cache.write_bytes(b"EARLIER")
    with pytest.raises(tb.EngineBuildError, match="could not build"):
        tb.build_engine(onnx_path, engine, tb.BuildOptions("fp16"))
    assert cache.read_bytes() == b"EARLIER" and not engine.exists()


@pytest.mark.parametrize(
    ("free", "expected"),
    [(None, 2 << 30), (16 << 30, 2 << 30), (3 << 30, 1536 << 20), (1 << 30, 512 << 20), (100 << 20, 256 << 20)],
)
def test_default_workspace_is_half_the_free_memory_capped(free, expected) -> None:
    assert tb.default_workspace_bytes(free) == expected


def test_build_sizes_the_workspace_from_free_gpu_memory(with_trt, tiny_onnx: Path, tmp_path: Path, monkeypatch):
    """An Orin Nano (4 GB shared with the CPU) with 1.2 GiB free gets a 614 MiB workspace, not 2 GiB."""
    trt = with_trt()
    monkeypatch.setattr(tb, "free_gpu_memory", lambda: int(1.2 * (1 << 30)))
    onnx_path = with_precision(tiny_onnx, tmp_path / "m.fp16.onnx", "fp16")
    report = tb.build_engine(onnx_path, tmp_path / "m.engine", tb.BuildOptions("fp16"))
    expected = int(1.2 * (1 << 30)) // 2
    assert ("set_memory_pool_limit", "WORKSPACE", expected) in trt.calls
    assert report.workspace_bytes == expected
    assert read_sidecar(tmp_path / "m.engine")["build_options"]["workspace_gb"] == pytest.approx(expected / (1 << 30))


def test_dynamic_batch_gets_an_optimisation_profile(with_trt, tiny_onnx: Path, tmp_path: Path):
    trt = with_trt()
    onnx_path = with_precision(tiny_onnx, tmp_path / "m.fp16.onnx", "fp16", dynamic=True)
    tb.build_engine(onnx_path, tmp_path / "m.engine", tb.BuildOptions("fp16", batch=tb.BatchProfile(1, 2, 4)))
    shapes = [c for c in trt.calls if c[0] == "set_shape"]
    assert shapes == [("set_shape", "images", (1, 3, 256, 256), (2, 3, 256, 256), (4, 3, 256, 256))]
    assert ("add_optimization_profile",) in trt.calls


def test_parser_errors_name_the_nodes(with_trt, tiny_onnx: Path, tmp_path: Path):
    with_trt(parse_ok=False)
    onnx_path = with_precision(tiny_onnx, tmp_path / "m.fp16.onnx", "fp16")
    with pytest.raises(tb.EngineBuildError) as info:
        tb.build_engine(onnx_path, tmp_path / "m.engine", tb.BuildOptions("fp16"))
    message = str(info.value)
    assert "node '/network/bad_0' (FancyOp): no importer registered" in message
    assert "/network/bad_1" in message
    assert not (tmp_path / "m.engine").exists()


def test_failed_build_writes_nothing(with_trt, tiny_onnx: Path, tmp_path: Path):
    with_trt(build_ok=False)
    onnx_path = with_precision(tiny_onnx, tmp_path / "m.fp16.onnx", "fp16")
    with pytest.raises(tb.EngineBuildError, match="could not build"):
        tb.build_engine(onnx_path, tmp_path / "m.engine", tb.BuildOptions("fp16"))
    assert list(tmp_path.glob("m.engine*")) == []


@pytest.mark.parametrize(
    "asked, error",
    [("fp32", "is a fp16 model but a fp32 engine"), ("int8", "is a fp16 model but a int8 engine")],
)
def test_precision_must_match_the_graph(with_trt, tiny_onnx: Path, tmp_path: Path, asked, error):
    with_trt()
    onnx_path = with_precision(tiny_onnx, tmp_path / "m.fp16.onnx", "fp16")
    with pytest.raises(FacemaskError, match=error):
        tb.build_engine(onnx_path, tmp_path / "m.engine", tb.BuildOptions(asked))


def test_static_graph_cannot_take_another_batch(tiny_onnx: Path, tmp_path: Path):
    onnx_path = with_precision(tiny_onnx, tmp_path / "m.fp16.onnx", "fp16")
    with pytest.raises(FacemaskError, match="static batch of 1.*--dynamic-batch"):
        tb.build_engine(onnx_path, tmp_path / "m.engine", tb.BuildOptions("fp16", batch=tb.BatchProfile(1, 2, 4)))


# -- plain Python ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected, error",
    [
        ("1,4,8", (1, 4, 8), None),
        (" 2, 2 ,2", (2, 2, 2), None),
        ("1,8,4", None, "MIN <= OPT <= MAX"),
        ("0,1,2", None, "MIN <= OPT <= MAX"),
        ("1,4", None, "three positive integers"),
        ("a,b,c", None, "three positive integers"),
        ("-1,2,3", None, "three positive integers"),
    ],
)
def test_dynamic_batch_parsing(text, expected, error):
    if error:
        with pytest.raises(FacemaskError, match=error):
            tb.BatchProfile.parse(text)
        return
    profile = tb.BatchProfile.parse(text)
    assert (profile.min, profile.opt, profile.max) == expected
    assert profile.is_static == (expected[0] == expected[2])


@pytest.mark.parametrize(
    "kwargs, error",
    [({"precision": "fp8"}, "unknown precision"), ({"workspace_gb": 0}, "must be positive"), ({}, None)],
)
def test_build_options_validation(kwargs, error):
    if error:
        with pytest.raises(FacemaskError, match=error):
            tb.BuildOptions(**kwargs)
    else:
        assert tb.BuildOptions(**kwargs).workspace_bytes() == 2 << 30


def test_device_command():
    static = tb.device_command(Path("m.int8.onnx"), tb.BuildOptions("int8"))
    assert static == "facemask-sdk build-engine --onnx m.int8.onnx --int8 --batch 1"
    dynamic = tb.device_command(
        Path("m.onnx"), tb.BuildOptions("fp32", batch=tb.BatchProfile(1, 2, 8), workspace_gb=4), Path("e.engine")
    )
    assert (
        dynamic
        == "facemask-sdk build-engine --onnx m.onnx --fp32 --dynamic-batch 1,2,8 --workspace-gb 4 --out e.engine"
    )


def test_sidecar_needs_model_metadata(tmp_path: Path):
    with pytest.raises(FacemaskError, match="without facemask-sdk metadata"):
        tb.make_sidecar(tmp_path / "x.onnx", {}, tb.BuildOptions(), "10.3.0", GPU, True)


def test_parser_error_formatting_without_node_names():
    class OldError:  # TensorRT 8: no node_name()/node_operator()
        def node(self):
            return 7

        def desc(self):
            return "unsupported"

    assert tb.format_parser_error(OldError()) == "node #7: unsupported"


def test_sidecar_path_is_beside_the_engine(tmp_path: Path):
    assert tb.sidecar_path(tmp_path / "m.engine") == tmp_path / "m.engine.json"


def test_importing_build_engine_modules_does_not_import_tensorrt(fresh_python):
    code = "import facemask_tools.build_engine.tensorrt_build, facemask_tools.build_engine.builder, sys; print('tensorrt' in sys.modules)"
    result = fresh_python(code)
    assert result.stdout.strip() == "False", result.stderr


def test_dynamic_size_onnx_gets_a_profile_at_the_chosen_size_and_the_sidecar_says_so(
    with_trt, tiny_any_size_export, tiny_onnx: Path, tmp_path: Path
):
    trt = with_trt()
    onnx_path = with_precision(tiny_any_size_export.path, tmp_path / "m.fp16.onnx", "fp16")
    tb.build_engine(onnx_path, tmp_path / "m.engine", tb.BuildOptions("fp16", input_size=384))
    shapes = [c for c in trt.calls if c[0] == "set_shape"]
    assert shapes == [("set_shape", "images", (1, 3, 384, 384), (1, 3, 384, 384), (1, 3, 384, 384))]
    sidecar = read_sidecar(tmp_path / "m.engine")
    assert ModelSpec.from_dict(sidecar["spec"]).image_size == (384, 384)
    assert sidecar["build_options"]["input_size"] == 384
    from facemask_sdk.engine_meta import rebuild_command

    assert "--input-size 384" in rebuild_command(sidecar)
    static = with_precision(tiny_onnx, tmp_path / "s.fp16.onnx", "fp16")
    with pytest.raises(FacemaskError, match="--dynamic-size"):
        tb.build_engine(static, tmp_path / "s.engine", tb.BuildOptions("fp16", input_size=384))
    with pytest.raises(FacemaskError, match="multiple of 128"):
        tb.BuildOptions("fp16", input_size=300)
