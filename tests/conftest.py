"""Shared fixtures: the CC0 sample images, and one tiny model exported once per test session.

`tiny_checkpoint` is a randomly initialised `tf_efficientdet_lite0` at 256 px (not trained: its
scores are around 0.01-0.1, so tests that compare detections use a low score threshold).
`tiny_onnx` is its ONNX export with metadata. Both need the training extras (torch, effdet, onnx);
without them the tests that use them are skipped. `closeup_frame` is a real close-up the shipped model alone gets
wrong and its close-up check puts right; `shipped_dynamic_onnx` the shipped weights with a dynamic batch axis.
`wheel` is the package built from the tracked files.
Fixtures that only one part's tests share live beside them: tests/facemask_sdk/conftest.py (the CUDA
emulator and stand-in pycuda, VOC folders), tests/build_engine/conftest.py (the tiny model's inputs).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
TINY_ARCHITECTURE = "tf_efficientdet_lite0"
TINY_IMAGE_SIZE = 256


def run_fresh_python(code: str) -> subprocess.CompletedProcess:
    """`code` in a new interpreter from the repository root: what importing a module loads, unaffected
    by what this test session has imported already."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.fixture(name="fresh_python")
def fresh_python_fixture():
    """`fresh_python(code)`: the CompletedProcess of `code` run in a new interpreter (see `run_fresh_python`)."""
    return run_fresh_python


@pytest.fixture(scope="session")
def sample_images() -> list[Path]:
    """The four sample images (all three classes among them), sorted by name."""
    paths = sorted((SAMPLES / "images").glob("*.png"))
    assert len(paths) == 4, f"expected 4 sample images under {SAMPLES / 'images'}, found {len(paths)}"
    return paths


CLOSEUP_SAMPLE = SAMPLES / "images" / "maksssksksss29.png"
CLOSEUP_CROP = (slice(43, 122), slice(266, 345))
"""A 79 px square of CLOSEUP_SAMPLE around its right-hand face (labelled `mask_weared_incorrect`, 0.83 of the
frame): the close-up view's crop of that face (`facemask_tools.training.closeups`, seed 0)."""


@pytest.fixture(scope="session")
def closeup_frame() -> np.ndarray:
    """The close-up (BGR uint8): the shipped model alone calls it `with_mask`, with the check
    `mask_weared_incorrect` (its label)."""
    import cv2

    return np.ascontiguousarray(cv2.imread(str(CLOSEUP_SAMPLE))[CLOSEUP_CROP])


@pytest.fixture(scope="session")
def shipped_dynamic_onnx(tmp_path_factory) -> Path:
    """The shipped weights exported once with a dynamic batch axis, as a batching server needs them."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxslim")
    from facemask_tools.build_engine.export import export_onnx

    return export_onnx(
        ROOT / "models" / "facemask.pt", tmp_path_factory.mktemp("serve") / "facemask.dynamic.onnx", dynamic_batch=True
    ).path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-init lite0 checkpoint at 256 px, saved like a training checkpoint."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("effdet")
    from facemask_tools.training.checkpoint import save_checkpoint
    from facemask_tools.training.model import create_network, make_spec

    torch.manual_seed(0)
    spec = make_spec(TINY_ARCHITECTURE, TINY_IMAGE_SIZE)
    network = create_network(spec).eval()
    payload = {
        "state_dict": network.state_dict(),
        "spec": spec.to_dict(),
        "epoch": 0,
        "metrics": {},
        "train_config": {},
        "init": "random (test)",
    }
    return save_checkpoint(tmp_path_factory.mktemp("checkpoint") / "tiny.pt", payload)


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint: Path, tmp_path_factory):
    """`ExportReport` of the tiny checkpoint exported once (static batch 1, parity on the samples)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxslim")
    pytest.importorskip("onnxruntime")
    from facemask_tools.build_engine.export import export_onnx

    return export_onnx(tiny_checkpoint, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_export) -> Path:
    """Path of the tiny exported ONNX model."""
    return tiny_export.path


@pytest.fixture(scope="session")
def tiny_dynamic_onnx(tiny_checkpoint: Path, tmp_path_factory) -> Path:
    """The tiny checkpoint exported once with a dynamic batch axis (what a batching server needs)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxslim")
    from facemask_tools.build_engine.export import export_onnx

    return export_onnx(tiny_checkpoint, tmp_path_factory.mktemp("onnx") / "tiny.dynamic.onnx", dynamic_batch=True).path


@pytest.fixture(scope="session")
def run_cli():
    """`run_cli(args, cwd=ROOT, env=None)`: the real `facemask-sdk` command line in a subprocess."""

    def run(args: list, cwd: Path = ROOT, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "facemask_sdk.cli.main", *map(str, args)],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="session")
def run_dev():
    """`run_dev(args, cwd=ROOT, timeout=300)`: `facemask-sdk dev ARGS` in a subprocess, through the click group
    itself (`facemask_tools.dev:dev`), so that it runs this checkout's tools whether or not its entry point is
    installed yet."""

    code = "from facemask_tools.dev import dev; dev(prog_name='facemask-sdk dev')"

    def run(args: list, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout
        )

    return run


@pytest.fixture(scope="session")
def refusal():
    """`refusal(args, group=cli)`: a command line that must be refused, run in-process through the group's own
    error handling (what a subprocess would print, without its seconds of imports). Asserts exit status 2 and
    one `error:` line on stderr; returns click's result (`.stderr` is that line, `.stdout` what came before)."""
    from click.testing import CliRunner

    def refuse(args: list, group=None):
        if group is None:
            from facemask_sdk.cli.main import cli as group
        result = CliRunner().invoke(group, [str(arg) for arg in args])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (
            args,
            result.output,
            result.exception,
        )
        return result

    return refuse


@pytest.fixture
def error_of():
    """`error_of(call)`: the message of the `FacemaskError` that `call()` raises, or "" (for calls made on
    another thread, where `pytest.raises` cannot reach)."""
    from facemask_sdk.errors import FacemaskError

    def message(call) -> str:
        try:
            call()
        except FacemaskError as exc:
            return str(exc)
        return ""

    return message


def _clean_copy(target: Path) -> Path:
    """The tracked files only, as a fresh clone has them (a build in the checkout would leave egg-info
    there, which shadows the installed metadata for anything run from the repository root)."""
    listed = subprocess.run(["git", "ls-files", "-z"], capture_output=True, cwd=ROOT, timeout=60)
    if listed.returncode != 0:
        pytest.skip("git cannot list the tracked files here (not a clone), so no clean copy to build from")
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from the tracked files, as a fresh clone would build it (once per session)."""
    out = tmp_path_factory.mktemp("wheel")
    source = _clean_copy(tmp_path_factory.mktemp("clone"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=out,
    )
    if result.returncode != 0 and "No module named" in result.stderr and "setuptools" in result.stderr:
        pytest.skip("setuptools is not installed here, so no wheel can be built without the network")
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("facemask_sdk-*.whl")
    return path


@pytest.fixture(scope="session")
def png_declaring():
    """png_declaring(width, height): bytes of a well-formed PNG header (valid CRCs) declaring that size over
    almost no data, the shape of a decompression bomb."""
    return _png_declaring


def _png_declaring(width: int, height: int) -> bytes:
    """A well-formed PNG header (valid CRCs) that declares width x height: a decompression bomb's shape."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="session")
def tiny_any_size_export(tiny_checkpoint: Path, tmp_path_factory):
    """`ExportReport` of the tiny checkpoint exported with a dynamic input size, checked at 384 px too."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxslim")
    pytest.importorskip("onnxruntime")
    from facemask_tools.build_engine.export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "tiny.any-size.onnx"
    return export_onnx(tiny_checkpoint, out, dynamic_size=True, size_checks=(384,))
